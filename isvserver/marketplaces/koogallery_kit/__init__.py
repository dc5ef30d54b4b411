"""KooGallery joint-operation (联营) Kit sync, V2 and V1 (tenant, application, auth and org syncs), and
the single sign-on of the tenant's users that it prepares."""

from __future__ import annotations

from isvserver.adapters import Adapter, DevelopmentSecret, Mount
from isvserver.marketplaces.koogallery_kit import config, events, v1  # noqa: F401 (v1 adds its routes)
from isvserver.marketplaces.koogallery_kit.cli import kit, tenants
from isvserver.marketplaces.koogallery_kit.models import MODELS, SEALED_COLUMNS
from isvserver.marketplaces.koogallery_kit.simulator import SIMULATION
from isvserver.marketplaces.koogallery_kit.sso_pages import error_page
from isvserver.marketplaces.koogallery_kit.sso_views import sso_bp
from isvserver.marketplaces.koogallery_kit.views import bp, error_answer

ADAPTER = Adapter(
    name="koogallery_kit",
    mounts=(
        Mount(bp, lambda settings: settings.of("koogallery_kit").produce_path, error_answer),
        # Single sign-on for the tenant's users: a browser's paths, answered with HTML pages.
        Mount(sso_bp, lambda settings: settings.of("koogallery_kit").sso.path, error_page),
    ),
    load_settings=config.load,
    key_interfaces=(config.KIT,),
    cli_commands=(kit, tenants),
    sealed_columns=tuple((field, model.id) for model, field in SEALED_COLUMNS),
    models=MODELS,
    event_types=events.EVENT_TYPES,
    init_jobs=events.init_jobs,
    simulations=(SIMULATION,),
    development_secrets=(
        DevelopmentSecret(
            "ISV_KIT_PRIVATE_KEY",
            config.new_private_key,
            config.public_key_of,
            "public key of the Kit private key (upload it in the seller console)",
        ),
    ),
)
