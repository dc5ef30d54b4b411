"""The V Cloud market (seed 002, spec vcloud.md): a provider node that registers its services and
follows its orders. The platform never calls the seller; the seller's node reads the platform."""

from __future__ import annotations

from isvserver.adapters import Adapter, ExpiryPolicy
from isvserver.marketplaces.vcloud import config, metrics, poller
from isvserver.marketplaces.vcloud.cli import vcloud
from isvserver.marketplaces.vcloud.models import MODELS
from isvserver.marketplaces.vcloud.views import bp, error_response

ADAPTER = Adapter(
    name=config.MARKETPLACE,
    blueprint=bp,  # the buyer's view of an order, not a marketplace call
    url_prefix=lambda settings: config.BUYER_PATH,
    load_settings=config.load,
    cli_commands=(vcloud,),
    models=MODELS,
    error_response=error_response,
    init_jobs=poller.init_jobs,
    expiry_policy=ExpiryPolicy.FREEZE,  # endAt is the end of the hours the buyer paid for
    metrics=metrics.collect,
)
