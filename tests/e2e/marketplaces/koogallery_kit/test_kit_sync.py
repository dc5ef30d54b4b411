"""Kit sync through a real `isvserver serve` (gunicorn, 3 workers, its job consumer) and a real webhook
receiver checking every Standard Webhooks signature; the Kit simulator against a real server."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from isvserver.marketplaces.koogallery_kit.client_secret import encrypt_client_secret, generate_key_pair

from support.harness import ACCESS_KEY, base_env
from support.receiver import WebhookReceiver
from support.server import (
    PRODUCE_PATH,
    Reply,
    Server,
    db_count,
    db_rows,
    http_request,
    post_signed,
    run_cli,
    running_server,
    subprocess_env,
)

pytestmark = pytest.mark.e2e

KIT_KEY = "kit-key-e2e-3a9c0d"
PRIVATE_PEM, PUBLIC_PEM = generate_key_pair()
PUBLIC_KEY = serialization.load_pem_public_key(PUBLIC_PEM)
KIT_ENV = {
    "ISV_MARKETPLACES": "koogallery,koogallery_kit",
    "ISV_KIT_KEYS": KIT_KEY,
    "ISV_KIT_PRIVATE_KEY": PRIVATE_PEM.decode("ascii"),
}
SYNCED = ["tenant.synced", "application.synced", "users.synced", "orgs.synced", "orgs.synced"]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def kit_call(server: Server, activity: str, body: dict[str, Any]) -> Reply:
    """One Kit call, x-sign computed here from spec §2.2 (not with isvserver's code)."""
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    timestamp, nonce = str(int(time.time() * 1000)), secrets.token_hex(32).upper()
    data = (KIT_KEY + nonce + timestamp).encode("utf-8") + raw
    sign = hmac.new(KIT_KEY.encode("utf-8"), data, hashlib.sha256).hexdigest().upper()
    headers = {"x-sign": sign, "x-timestamp": timestamp, "x-nonce": nonce}
    return http_request(server.base, "POST", f"{PRODUCE_PATH}/produceAPI/v2/{activity}", raw, headers)


def ok(reply: Reply) -> bool:
    """HTTP 200, resultCode 000000, Body-Sign by the Kit key."""
    return reply.status == 200 and reply.json["resultCode"] == "000000" and reply.signed_by(KIT_KEY)


def common(instance_id: str, **more: Any) -> dict[str, Any]:
    return {
        "instanceId": instance_id,
        "tenantId": "t-e2e",
        "testFlag": 0,
        "timeStamp": "20220420114117642",
        **more,
    }


def syncs(instance_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The five sync calls of one tenant, in order."""
    users = [
        {
            "userName": "wang",
            "name": "王五",
            "orgCode": "d1",
            "role": "admin",
            "enable": "true",
            "mobile": "13800000001",
        },
        {"userName": "zhao", "name": "赵六", "orgCode": "d1", "role": "user", "enable": "true"},
    ]
    secret = encrypt_client_secret(PUBLIC_KEY, "e2e-client-secret")
    tree = [
        {"orgCode": "root", "orgName": "总部"},
        {"orgCode": "d1", "orgName": "一部", "parentCode": "root"},
    ]
    return [
        ("tenantSync", tenant(instance_id)),
        ("applicationSync", common(instance_id, appId="a1", clientId="c1", clientSecret=secret, flag=1)),
        ("authSync", common(instance_id, appId="a1", userList=users, flag=1)),
        ("singleOrgSync", common(instance_id, orgCode="d1", orgName="一部", parentCode="root", flag=1)),
        ("allOrgSync", common(instance_id, orgInfoList=tree)),
    ]


def tenant(instance_id: str) -> dict[str, Any]:
    return common(
        instance_id, orderId="CS-E2E", tenantCode="e2e", name="端到端公司", domainName="e2e.example", flag=1
    )


def new_instance(server: Server, business_id: str) -> str:
    order_id = f"CS{uuid.uuid4().hex[:10].upper()}"
    body = {"activity": "newInstance", "orderId": order_id, "orderLineId": f"{order_id}-000001"}
    reply, _ = post_signed(server, {**body, "businessId": business_id})
    assert reply.status == 200 and reply.signed_by(ACCESS_KEY), reply.raw
    return reply.json["instanceId"]


def test_concurrent_identical_kit_calls_store_one_row_and_every_change_reaches_the_product_once_in_order(
    tmp_path: Path, database_url: str, receiver: WebhookReceiver
) -> None:
    env = base_env(
        tmp_path,
        database_url,
        **KIT_ENV,
        **receiver.settings(),
        ISV_WEBHOOK_TIMEOUT_S="5",
        ISV_JOB_RETRY_BASE_S="0.2",
        ISV_JOB_RETRY_MAX_S="1",
    )
    with running_server(subprocess_env(env), tmp_path / "server.log", cwd=tmp_path, workers=3) as server:
        known = new_instance(server, "kit-e2e-known")
        body = tenant(known)
        start = threading.Barrier(20)

        def racer(_: int) -> Reply:
            start.wait()
            return kit_call(server, "tenantSync", body)

        with ThreadPoolExecutor(20) as pool:
            replies = list(pool.map(racer, range(20)))
        assert [ok(r) for r in replies] == [True] * 20, [r.raw for r in replies if not ok(r)]
        url = server.database_url
        assert db_count(url, "kit_tenant", "instance_id = ?", (known,)) == 1
        assert db_count(url, "delivery", "event_type = 'tenant.synced'") == 1

        for activity, call_body in syncs(known)[1:]:
            assert ok(kit_call(server, activity, call_body)), activity
        for activity, call_body in syncs("kit-e2e-early"):  # before its newInstance: parked
            assert ok(kit_call(server, activity, call_body)), activity
        assert db_count(url, "parked_change", "instance_id = 'kit-e2e-early' AND adopted_at IS NULL") == 5
        early = new_instance(server, "kit-e2e-early")
        assert early == "kit-e2e-early"
        for activity, call_body in syncs(known):  # every one a repeat
            assert ok(kit_call(server, activity, call_body)), activity

        expected = ["instance.created", *SYNCED]
        assert receiver.wait_for(
            lambda: all(receiver.event_types(i) == expected for i in (known, early)), timeout=30
        ), receiver.requests
        time.sleep(0.5)  # nothing more arrives
        assert receiver.event_types(known) == receiver.event_types(early) == expected
        assert receiver.rejected == []
        ids = [e["webhook_id"] for e in receiver.events]
        assert len(ids) == len(set(ids)) == 12
        for request in receiver.requests:
            assert request["headers"]["webhook-signature"].startswith("v1,")
        users = next(e for e in receiver.events if e["type"] == "users.synced" and e["instance_id"] == early)
        assert sorted(u["name"] for u in users["payload"]["data"]["sync"]["users"]) == ["王五", "赵六"]
        app = next(e for e in receiver.events if e["type"] == "application.synced")
        assert "clientSecret" not in app["payload"]["data"]["sync"]
        assert db_rows(url, "SELECT COUNT(*) FROM delivery WHERE status <> 'delivered'") == [(0,)]
        assert "端到端" not in server.read_log() and "王五" not in server.read_log()


@pytest.mark.parametrize("server_overrides", [KIT_ENV], ids=["kit"])
def test_simulate_kit_and_the_flow_with_its_kit_sequence(server: Server, tmp_path: Path) -> None:
    one = run_cli("simulate", "kit", "tenantSync", server.url, "instanceId=sim-e2e-1", env=server.env)
    assert one.returncode == 0, one.describe()
    assert one.stdout.startswith("tenantSync: HTTP 200, Body-Sign valid, "), one.describe()
    assert '"resultCode": "000000"' in one.stdout
    assert db_count(server.database_url, "kit_tenant", "instance_id = 'sim-e2e-1'") == 1

    public = tmp_path / "seller-public.pem"
    public.write_bytes(PUBLIC_PEM)
    app = run_cli(
        "simulate",
        "kit",
        "applicationSync",
        server.url,
        "instanceId=sim-e2e-1",
        "clientSecret=plain-1",
        "--public-key",
        str(public),
        env=server.env,
    )
    assert app.returncode == 0, app.describe()
    assert "Body-Sign valid" in app.stdout and "plain-1" not in app.output
    assert db_count(server.database_url, "kit_application", "instance_id = 'sim-e2e-1'") == 1

    debug = run_cli("simulate", "kit", "authSync", server.url, "--test", env=server.env)
    assert debug.returncode == 0, debug.describe()
    wrong = run_cli("simulate", "kit", "tenantSync", server.url, "--key", "not-the-kit-key", env=server.env)
    assert wrong.returncode == 1 and '"000001"' in wrong.stdout, wrong.describe()

    flow = run_cli("simulate", "flow", server.url, env=server.env)
    assert flow.returncode == 0, flow.describe()
    kit_lines = [line for line in flow.stdout.splitlines() if line.startswith("kit ")]
    assert len(kit_lines) == 7, flow.describe()
    assert all(": HTTP 200, Body-Sign valid, " in line for line in kit_lines), flow.describe()
    assert "kit flow: all answers right" in flow.stderr
    assert db_count(server.database_url, "kit_user", "deleted_at IS NOT NULL") == 1
