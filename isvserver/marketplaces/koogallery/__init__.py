"""Huawei Cloud KooGallery (云商店) SaaS produce interface: V2 basic (POST) and V1 basic + License (GET)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from isvserver import lanes
from isvserver.adapters import Adapter, DevelopmentSecret, Mount, Simulation
from isvserver.marketplaces.koogallery import config, openapi, order_jobs
from isvserver.marketplaces.koogallery.handlers import READ_ONLY_ACTIVITIES
from isvserver.marketplaces.koogallery.instance_details import instance_sections
from isvserver.marketplaces.koogallery.models import MODELS, OrderLineRecord
from isvserver.marketplaces.koogallery.orders_cli import order
from isvserver.marketplaces.koogallery.simulator import SIMULATIONS, sign
from isvserver.marketplaces.koogallery.usage_push import METERING
from isvserver.marketplaces.koogallery.v1 import cli as v1_cli
from isvserver.marketplaces.koogallery.v1 import views as v1_views
from isvserver.marketplaces.koogallery.v1.handlers import app_info_check
from isvserver.marketplaces.koogallery.v1.models import V1_SEALED_COLUMNS
from isvserver.marketplaces.koogallery.views import bp, error_answer

if TYPE_CHECKING:
    from isvserver.settings import Settings


def _produce_path(settings: Settings) -> str:
    return settings.of("koogallery").produce_path


ADAPTER = Adapter(
    name="koogallery",
    # V1 (GET) and V2 (POST, and the errors of any other method) on the same production URL (spec §1).
    mounts=(
        Mount(
            v1_views.bp,
            _produce_path,
            v1_views.error_answer,
            frozenset({"GET"}),
            reads=lanes.query_field_in("activity", v1_views.READ_ONLY),
        ),
        Mount(bp, _produce_path, error_answer, reads=lanes.json_field_in("activity", READ_ONLY_ACTIVITIES)),
    ),
    load_settings=config.load,
    key_interfaces=(config.BASIC, config.NOTIFY),
    cli_commands=(order, sign, v1_cli.license_group),
    instance_sections=instance_sections,
    openapi=openapi.paths,
    sealed_columns=((OrderLineRecord.details_sealed, OrderLineRecord.order_line_id), *V1_SEALED_COLUMNS),
    models=MODELS,
    init_jobs=order_jobs.init_jobs,
    metering=METERING,
    app_info_check=app_info_check,
    simulations=(*SIMULATIONS, Simulation("v1", v1_cli.simulate_v1, flow=v1_cli.flow)),
    development_secrets=(
        DevelopmentSecret(
            "ISV_LICENSE_SIGNING_KEY",
            config.new_license_key,
            config.license_public_key,
            "public key that verifies the built-in licenses (give it to your product)",
        ),
    ),
)
