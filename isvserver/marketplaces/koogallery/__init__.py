"""Huawei Cloud KooGallery (云商店) SaaS produce interface, generation V2 basic."""

from __future__ import annotations

from isvserver.adapters import Adapter, Mount
from isvserver.marketplaces.koogallery import config, openapi, order_jobs
from isvserver.marketplaces.koogallery.instance_details import instance_sections
from isvserver.marketplaces.koogallery.models import MODELS, OrderLineRecord
from isvserver.marketplaces.koogallery.orders_cli import order
from isvserver.marketplaces.koogallery.simulator import sign, simulate
from isvserver.marketplaces.koogallery.views import bp, error_answer

ADAPTER = Adapter(
    name="koogallery",
    mounts=(Mount(bp, lambda settings: settings.of("koogallery").produce_path, error_answer),),
    load_settings=config.load,
    key_interfaces=(config.BASIC, config.NOTIFY),
    cli_commands=(order, sign, simulate),
    instance_sections=instance_sections,
    openapi=openapi.paths,
    sealed_columns=((OrderLineRecord.details_sealed, OrderLineRecord.order_line_id),),
    models=MODELS,
    init_jobs=order_jobs.init_jobs,
)
