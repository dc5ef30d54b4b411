"""The peer the broker benchmark compares isvserver with: `openbrokerapi` serving the same catalog.

Served by the same gunicorn config (config/gunicorn.conf.py) and worker count as isvserver:
`gunicorn -c config/gunicorn.conf.py --pythonpath bench openbrokerapi_app:app`, the catalog read from
BENCH_BROKER_CATALOG (YAML), HTTP Basic `bench:bench-secret`. openbrokerapi keeps no state: its
get_instance answers from the request alone (what the library leaves to its user).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml
from flask import Flask, Response, jsonify
from openbrokerapi import api
from openbrokerapi.catalog import Schemas, ServicePlan
from openbrokerapi.service_broker import GetInstanceDetailsSpec, Service, ServiceBroker

USER, PASSWORD = "bench", "bench-secret"
DOCUMENT = yaml.safe_load(Path(os.environ["BENCH_BROKER_CATALOG"]).read_text(encoding="utf-8"))


def _plan(plan: dict[str, Any]) -> ServicePlan:
    schemas = plan.get("schemas") or {}
    extra = {
        k: v for k, v in plan.items() if k not in ("id", "name", "description", "free", "bindable", "schemas")
    }
    return ServicePlan(
        plan["id"],
        plan["name"],
        plan["description"],
        free=plan.get("free"),
        bindable=plan.get("bindable"),
        schemas=Schemas(
            service_instance=schemas.get("service_instance"), service_binding=schemas.get("service_binding")
        ),
        **extra,
    )


SERVICES = [
    Service(
        service["id"],
        service["name"],
        service["description"],
        service["bindable"],
        [_plan(plan) for plan in service["plans"]],
        plan_updateable=service.get("plan_updateable", False),
        instances_retrievable=service.get("instances_retrievable", False),
        bindings_retrievable=service.get("bindings_retrievable", False),
        allow_context_updates=service.get("allow_context_updates", False),
    )
    for service in DOCUMENT["services"]
]
FIRST = DOCUMENT["services"][0]


class Broker(ServiceBroker):
    """The same catalog; an instance read answered without state."""

    def catalog(self) -> list[Service]:
        return SERVICES

    def get_instance(self, instance_id: str, **kwargs: Any) -> GetInstanceDetailsSpec:
        return GetInstanceDetailsSpec(FIRST["id"], FIRST["plans"][0]["id"], parameters={"client_id": "bench"})


app = Flask(__name__)
logger = logging.getLogger("openbrokerapi")
logger.setLevel(logging.WARNING)
app.register_blueprint(
    api.get_blueprint(Broker(), api.BrokerCredentials(USER, PASSWORD), logger), url_prefix="/broker"
)


@app.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")
