"""Open Service Broker (OSB v2) for Huawei AppCube's custom source and any OSB platform: a token endpoint
(client credentials) and the broker (catalog, provision, fetch, last operation, update, deprovision)."""

from __future__ import annotations

from isvserver.adapters import Adapter, Mount
from isvserver.marketplaces.broker import config
from isvserver.marketplaces.broker.cli import broker
from isvserver.marketplaces.broker.instance_details import init_jobs, instance_sections
from isvserver.marketplaces.broker.models import MODELS, BrokerInstance
from isvserver.marketplaces.broker.openapi import paths
from isvserver.marketplaces.broker.simulator import SIMULATION
from isvserver.marketplaces.broker.views import broker_bp, error_answer, token_bp

ADAPTER = Adapter(
    name=config.NAME,
    mounts=(
        Mount(token_bp, lambda settings: settings.of(config.NAME).token_path, error_answer),
        Mount(broker_bp, lambda settings: settings.of(config.NAME).path, error_answer),
    ),
    load_settings=config.load,
    cli_commands=(broker,),
    openapi=paths,
    sealed_columns=((BrokerInstance.secrets_sealed, BrokerInstance.id),),
    models=MODELS,
    init_jobs=init_jobs,
    instance_sections=instance_sections,
    simulations=(SIMULATION,),
)
