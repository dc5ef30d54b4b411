"""The broker through a real `isvserver serve` (gunicorn, 3 workers, its job consumer) on SQLite and
PostgreSQL: the seed's AppCube sequence byte for byte, tokens across workers, the negative cases, async
provisioning through the webhook provisioner with a slow product and a kill -9 of the consumer, and 20
concurrent identical creations."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml

from isvserver.marketplaces.broker.catalog import EXAMPLE

from support.harness import base_env
from support.receiver import WebhookReceiver
from support.server import (
    Reply,
    Server,
    db_count,
    db_rows,
    http_request,
    job_consumers,
    run_cli,
    running_server,
    subprocess_env,
    wait_until,
)

pytestmark = pytest.mark.e2e

PREFIX = "/service/CP_DS__AppCubeBrokerDemo/1.0.0"
TOKEN_PATH = "/baas/auth/v1.0/oauth2/token"
# The seed's create request, byte for byte as the page prints it (its placeholder values filled in).
SEED_CREATE = b"""{
"context": "string",
"maintenance_info": {},
"parameters": {
"client_id": "buyer-app-1",
"client_secret": "Buyer-Secret-e2e"
},
"plan_id": "003M000000ppqFT7kFRQ",
"service_id": "$CP_DS__AppCubeBrokerDemo_b"
}"""
GOLD = {
    "id": "svc-gold",
    "name": "gold",
    "description": "gold",
    "bindable": False,
    "plan_updateable": True,
    "plans": [
        {"id": "small", "name": "small", "description": "small"},
        {"id": "large", "name": "large", "description": "large"},
    ],
}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def broker_env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    document["services"].append(GOLD)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return subprocess_env(
        base_env(
            tmp_path,
            database_url,
            ISV_MARKETPLACES="koogallery,broker",
            ISV_BROKER_PATH=PREFIX,
            ISV_BROKER_CATALOG=str(catalog),
            **extra,
        )
    )


def add_client(env: dict[str, str], name: str = "appcube") -> tuple[str, str]:
    added = run_cli("broker", "client", "add", name, env=env)
    assert added.returncode == 0, added.describe()
    found = dict(re.findall(r"^(client_id|client_secret)=(\S+)$", added.stdout, re.M))
    return found["client_id"], found["client_secret"]


def token(server: Server, client_id: str, secret: str) -> str:
    body = urlencode({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    reply = http_request(
        server.base, "POST", TOKEN_PATH, body.encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert reply.status == 200, reply.raw
    assert set(reply.json) == {"access_token", "expires_in", "token_type"}
    assert (reply.json["expires_in"], reply.json["token_type"]) == (3600, "Bearer")
    return reply.json["access_token"]


def call(
    server: Server, method: str, path: str, access: str, body: bytes | None = None, **headers: str
) -> Reply:
    return http_request(server.base, method, f"{PREFIX}{path}", body, {"access-token": access, **headers})


def test_the_seeds_appcube_sequence_and_the_negative_cases(tmp_path: Path, database_url: str) -> None:
    env = broker_env(tmp_path, database_url)
    with running_server(env, tmp_path / "server.log", cwd=tmp_path, workers=3) as server:
        client_id, secret = add_client(server.env)
        access = token(server, client_id, secret)

        catalogs: list[Reply] = []
        with ThreadPoolExecutor(6) as pool:  # at once: calls one after another may all meet one worker
            for _ in range(10):
                catalogs += pool.map(lambda _: call(server, "GET", "/catalog", access), range(12))
                if len(set(server.call_pids("activity=catalog"))) >= 2:
                    break
        expected = yaml.safe_load((tmp_path / "catalog.yaml").read_text(encoding="utf-8"))
        assert {c.status for c in catalogs} == {200}
        assert catalogs[0].json == expected
        assert catalogs[0].raw == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()
        assert len(set(server.call_pids("activity=catalog"))) >= 2  # one token, valid on every worker

        created = call(server, "PUT", "/service_instances/appcube-e2e-1", access, SEED_CREATE)
        assert created.status == 201, created.raw
        assert created.json["parameters"] == {"client_id": "buyer-app-1", "client_secret": "******"}
        assert created.json["metadata"]["display"][0]["value"].endswith("/t/appcube-e2e-1")
        query = "?plan_id=003M000000ppqFT7kFRQ&service_id=%24CP_DS__AppCubeBrokerDemo_b"
        read = call(server, "GET", f"/service_instances/appcube-e2e-1{query}", access)
        assert read.status == 200
        assert (read.json["instance_usable"], read.json["state"], read.json["update_repeatable"]) == (
            True,
            "succeeded",
            True,
        )
        last = call(
            server, "GET", f"/service_instances/appcube-e2e-1/last_operation{query}&operation=", access
        )
        assert (last.status, last.json["state"]) == (200, "succeeded")

        # the negative cases
        assert http_request(server.base, "GET", f"{PREFIX}/catalog").status == 401
        assert call(server, "GET", "/catalog", "not-a-token").status == 401
        old = call(server, "GET", "/catalog", access, **{"X-Broker-API-Version": "2.11"})
        assert old.status == 412
        other = SEED_CREATE.replace(b"buyer-app-1", b"buyer-app-2")
        assert call(server, "PUT", "/service_instances/appcube-e2e-1", access, other).status == 409
        assert call(server, "PUT", "/service_instances/appcube-e2e-1", access, SEED_CREATE).status == 200
        wrong = urlencode({"grant_type": "client_credentials", "client_id": client_id, "client_secret": "x"})
        refused = http_request(
            server.base,
            "POST",
            TOKEN_PATH,
            wrong.encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert (refused.status, refused.json["error"]) == (401, "invalid_client")

        shown = run_cli("instances", "show", "appcube-e2e-1", "--json", env=server.env)
        assert shown.returncode == 0, shown.describe()
        details = json.loads(shown.stdout)
        assert details["broker_plan"][0]["parameters"] == {
            "client_id": "buyer-app-1",
            "client_secret": "******",
        }
        assert [op["kind"] for op in details["broker_operations"]] == ["created"]
        listed = run_cli("broker", "client", "list", env=server.env)
        assert client_id in listed.stdout and secret not in listed.output

        deleted = call(server, "DELETE", "/service_instances/appcube-e2e-1", access)
        assert deleted.status == 200
        assert call(server, "DELETE", "/service_instances/appcube-e2e-1", access).status == 410

        broker_url = f"{server.base}{PREFIX}"
        sim_env = {**server.env, "ISV_BROKER_CLIENT_SECRET": secret}
        simulated = run_cli("simulate", "broker", broker_url, "--client-id", client_id, env=sim_env)
        assert simulated.returncode == 0, simulated.describe()
        assert "broker: all answers right" in simulated.stderr and secret not in simulated.output
        other_id, _ = add_client(server.env, "other")
        failed = run_cli("simulate", "broker", broker_url, "--client-id", other_id, env=sim_env)
        assert failed.returncode == 1, failed.describe()

        removed = run_cli("broker", "client", "remove", client_id, env=server.env)
        assert removed.returncode == 0, removed.describe()
        assert call(server, "GET", "/catalog", access).status == 401  # revoked with its client
        log = server.read_log()
    for leaked in (secret, access, "Buyer-Secret-e2e"):
        assert leaked not in log
    assert db_rows(server.database_url, "SELECT interface FROM callback_log GROUP BY interface") == [
        ("broker",)
    ]
    stored = db_rows(server.database_url, "SELECT parameters, secrets_sealed FROM broker_instance")
    assert "Buyer-Secret-e2e" not in json.dumps(stored)


def test_async_provisioning_survives_a_kill_9_of_the_consumer(
    tmp_path: Path, database_url: str, receiver: WebhookReceiver
) -> None:
    env = broker_env(
        tmp_path,
        database_url,
        **receiver.settings(),
        ISV_WEBHOOK_TIMEOUT_S="5",
        ISV_JOB_RETRY_BASE_S="0.2",
        ISV_JOB_RETRY_MAX_S="1",
        ISV_JOB_LEASE_S="3",
    )
    receiver.hold()
    with running_server(env, tmp_path / "server.log", cwd=tmp_path, workers=3) as server:
        client_id, secret = add_client(server.env)
        access = token(server, client_id, secret)
        osb = {"X-Broker-API-Version": "2.17", "X-Broker-API-Request-Identity": "req-e2e-1"}
        assert wait_until(lambda: len(job_consumers(server.pid)) == 1, 20), "serve started no job consumer"
        [victim] = job_consumers(server.pid)

        path = "/service_instances/async-e2e-1"
        refused = call(server, "PUT", path, access, SEED_CREATE, **osb)
        assert (refused.status, refused.json["error"]) == (422, "AsyncRequired")
        accepted = call(server, "PUT", f"{path}?accepts_incomplete=true", access, SEED_CREATE, **osb)
        assert accepted.status == 202, accepted.raw
        assert accepted.headers["X-Broker-API-Request-Identity"] == "req-e2e-1"
        operation = accepted.json["operation"]
        assert receiver.wait_for(lambda: receiver.held == 1, 10), "the creation never reached the product"

        polled = call(server, "GET", f"{path}/last_operation?operation={operation}", access, **osb)
        assert (polled.status, polled.json["state"], polled.headers["Retry-After"]) == (
            200,
            "in progress",
            "5",
        )
        busy = call(server, "DELETE", f"{path}?accepts_incomplete=true", access, **osb)
        assert (busy.status, busy.json["error"]) == (422, "ConcurrencyError")

        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: victim not in job_consumers(server.pid), 10)
        receiver.release_hold()
        assert wait_until(lambda: job_consumers(server.pid) - {victim}, 20), "the consumer was not restarted"

        def state() -> str:
            return call(server, "GET", f"{path}/last_operation?operation={operation}", access, **osb).json[
                "state"
            ]

        assert wait_until(lambda: state() == "succeeded", 30)
        again = call(server, "PUT", f"{path}?accepts_incomplete=true", access, SEED_CREATE, **osb)
        assert again.status == 200

        delete = call(server, "DELETE", f"{path}?accepts_incomplete=true", access, **osb)
        assert delete.status == 202
        delete_op = delete.json["operation"]

        def polled_delete() -> int:
            return call(server, "GET", f"{path}/last_operation?operation={delete_op}", access, **osb).status

        assert wait_until(lambda: polled_delete() == 410, 30)
        assert call(server, "DELETE", path, access, **osb).status == 410
        log = server.read_log()

    assert list(receiver.tenants) == ["async-e2e-1"]
    created = [e for e in receiver.events if e["type"] == "instance.created"]
    assert created[0]["payload"]["data"]["change"]["parameters"] == {
        "client_id": "buyer-app-1",
        "client_secret": "******",
    }
    assert "Buyer-Secret-e2e" not in json.dumps(receiver.events)
    assert [e["type"] for e in receiver.events if e["type"] != "instance.created"] == ["instance.released"]
    assert "request_identity=req-e2e-1" in log


def test_twenty_concurrent_identical_creations_make_one_instance_and_one_delivery(
    tmp_path: Path, database_url: str, receiver: WebhookReceiver
) -> None:
    env = broker_env(
        tmp_path,
        database_url,
        **receiver.settings(),
    )
    with running_server(env, tmp_path / "server.log", cwd=tmp_path, workers=3) as server:
        client_id, secret = add_client(server.env)
        access = token(server, client_id, secret)
        start = threading.Barrier(20)
        body = json.dumps({"service_id": "svc-gold", "plan_id": "small", "parameters": {}}).encode()

        def racer(_: int) -> Reply:
            start.wait()
            return call(server, "PUT", "/service_instances/race-1?accepts_incomplete=true", access, body)

        with ThreadPoolExecutor(20) as pool:
            replies = list(pool.map(racer, range(20)))
        statuses = sorted({r.status for r in replies})
        assert set(statuses) <= {200, 201, 202}, [r.raw for r in replies]
        operations = {r.json.get("operation") for r in replies if r.status == 202}
        assert len(operations) <= 1
        url = server.database_url
        assert db_count(url, "instance", "instance_id = 'race-1'") == 1
        assert db_count(url, "broker_instance") == 1
        assert db_count(url, "delivery", "event_type = 'instance.created'") == 1
        assert receiver.wait_for(lambda: receiver.event_types("race-1") == ["instance.created"], 20)
    assert receiver.event_types("race-1") == ["instance.created"]
