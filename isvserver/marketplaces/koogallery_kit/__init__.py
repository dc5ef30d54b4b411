"""KooGallery V2 joint-operation (联营) Kit sync: tenantSync, applicationSync, authSync, the org syncs."""

from __future__ import annotations

from isvserver.adapters import Adapter, Mount
from isvserver.marketplaces.koogallery_kit import config, events
from isvserver.marketplaces.koogallery_kit.cli import kit, tenants
from isvserver.marketplaces.koogallery_kit.models import MODELS, SEALED_COLUMNS
from isvserver.marketplaces.koogallery_kit.simulator import SIMULATION
from isvserver.marketplaces.koogallery_kit.views import bp, error_answer

ADAPTER = Adapter(
    name="koogallery_kit",
    mounts=(Mount(bp, lambda settings: settings.of("koogallery_kit").produce_path, error_answer),),
    load_settings=config.load,
    key_interfaces=(config.KIT,),
    cli_commands=(kit, tenants),
    sealed_columns=tuple((field, model.id) for model, field in SEALED_COLUMNS),
    models=MODELS,
    event_types=events.EVENT_TYPES,
    init_jobs=events.init_jobs,
    simulations=(SIMULATION,),
)
