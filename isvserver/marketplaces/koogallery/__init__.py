"""Huawei Cloud KooGallery (云商店) SaaS produce interface: V2 basic (POST) and V1 basic + License (GET)."""

from __future__ import annotations

from isvserver.adapters import Adapter, Simulation
from isvserver.marketplaces.koogallery import config, openapi, order_jobs
from isvserver.marketplaces.koogallery.instance_details import instance_sections
from isvserver.marketplaces.koogallery.models import MODELS, OrderLineRecord
from isvserver.marketplaces.koogallery.orders_cli import order
from isvserver.marketplaces.koogallery.simulator import sign, simulate
from isvserver.marketplaces.koogallery.v1 import cli as v1_cli
from isvserver.marketplaces.koogallery.v1.handlers import app_info_check
from isvserver.marketplaces.koogallery.views import bp, envelope

ADAPTER = Adapter(
    name="koogallery",
    blueprint=bp,
    url_prefix=lambda settings: settings.of("koogallery").produce_path,
    load_settings=config.load,
    key_interfaces=(config.BASIC, config.NOTIFY),
    cli_commands=(order, sign, simulate, v1_cli.license_group),
    instance_sections=instance_sections,
    openapi=openapi.paths,
    sealed_columns=((OrderLineRecord.details_sealed, OrderLineRecord.order_line_id),),
    models=MODELS,
    error_response=envelope,
    init_jobs=order_jobs.init_jobs,
    app_info_check=app_info_check,
    simulations=(Simulation("v1", v1_cli.simulate_v1, flow=v1_cli.flow),),
)
