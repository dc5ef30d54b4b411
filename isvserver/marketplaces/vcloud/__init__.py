"""The V Cloud market (seed 002, spec vcloud.md): a provider node that registers its services and
follows its orders. The platform never calls the seller; the seller's node reads the platform."""

from __future__ import annotations

from isvserver.adapters import Adapter, ExpiryPolicy, Mount
from isvserver.marketplaces.vcloud import config, metrics, openapi, poller
from isvserver.marketplaces.vcloud.cli import instance_sections, vcloud
from isvserver.marketplaces.vcloud.models import MODELS
from isvserver.marketplaces.vcloud.views import bp, error_response

ADAPTER = Adapter(
    name=config.MARKETPLACE,
    # The buyer's view of an order (the platform itself never calls the provider).
    mounts=(Mount(bp, lambda settings: config.BUYER_PATH, error_response),),
    load_settings=config.load,
    openapi=openapi.spec,
    cli_commands=(vcloud,),
    models=MODELS,
    init_jobs=poller.init_jobs,
    instance_sections=instance_sections,
    expiry_policy=ExpiryPolicy.FREEZE,  # endAt is the end of the hours the buyer paid for
    gauges=metrics.collect,
)
