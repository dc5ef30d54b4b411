"""V Cloud through real processes: `isvserver serve` (gunicorn and the job consumer it starts) or bare
`isvserver worker`s, the local platform (state in SQLite) and a webhook product that verifies every
signature; SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl.public import PrivateKey, SealedBox
from prometheus_client.parser import text_string_to_metric_families

from support.harness import base_env
from support.receiver import WebhookReceiver
from support.server import (
    ISVSERVER,
    db_count,
    db_rows,
    http_request,
    job_consumers,
    run_cli,
    running_server,
    stop_group,
    subprocess_env,
    wait_until,
)
from support.vcloud_platform import TOKEN, VCloudPlatform, vcloud_env

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "vcloud-service-template.yaml"
WAIT_S = 40.0


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[VCloudPlatform]:
    with VCloudPlatform(tmp_path / "platform.sqlite3") as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def environment(
    tmp_path: Path, database_url: str, platform: VCloudPlatform, receiver: WebhookReceiver, **extra: str
) -> dict[str, str]:
    settings = {
        **vcloud_env(platform),
        "ISV_MARKETPLACES": "vcloud",
        **receiver.settings(),
        "ISV_JOB_RETRY_BASE_S": "0.2",
        "ISV_JOB_RETRY_MAX_S": "1",
        "ISV_JOB_LEASE_S": "3",
        "ISV_VCLOUD_POLL_INTERVAL_S": "1",
        **extra,
    }
    return subprocess_env(base_env(tmp_path, database_url, **settings))


def instance_states(url: str) -> dict[str, str]:
    return dict(db_rows(url, "SELECT instance_id, state FROM instance WHERE marketplace = 'vcloud'"))


def test_registration_and_an_order_followed_to_the_product_and_shown_to_the_buyer(
    tmp_path: Path, database_url: str, platform: VCloudPlatform, receiver: WebhookReceiver
) -> None:
    env = environment(tmp_path, database_url, platform, receiver)
    first = run_cli("vcloud", "register", str(EXAMPLE), env=env, cwd=tmp_path)
    second = run_cli("vcloud", "register", str(EXAMPLE), env=env, cwd=tmp_path)
    assert first.returncode == 0, first.describe()
    assert second.returncode == 0, second.describe()
    assert second.stdout.splitlines()[-1] == "0 created, 3 as the template says, 0 differ"
    assert [len(platform.bodies(t)) for t in ("provider", "category", "service")] == [1, 1, 1]

    buyer = PrivateKey.generate()
    with running_server(env, tmp_path / "server.log", cwd=tmp_path, workers=2) as server:
        order = platform.add_order(
            publicKey=base64.b64encode(bytes(buyer.public_key)).decode(), endAt=int(time.time()) + 8
        )
        assert wait_until(
            lambda: instance_states(server.database_url).get(order["id"]) == "active", WAIT_S
        ), server.read_log()[-3000:]
        view = http_request(server.base, "GET", f"/vcloud/v1/orders/{order['id']}")
        missing = http_request(server.base, "GET", "/vcloud/v1/orders/no-such-order")

        assert wait_until(lambda: instance_states(server.database_url)[order["id"]] == "frozen", WAIT_S)
        platform.update_order(order["id"], serviceStatus="ServiceDone", serviceDoneTS=int(time.time()))
        assert wait_until(lambda: instance_states(server.database_url)[order["id"]] == "released", WAIT_S)
        assert receiver.wait_for(lambda: "instance.released" in receiver.event_types(order["id"]), WAIT_S)
        metrics = http_request(server.base, "GET", "/metrics").raw.decode()
        listed = run_cli("vcloud", "orders", "--json", env=env, cwd=tmp_path)
        log = server.read_log()

    assert view.status == 200
    body = view.json
    tenant = receiver.tenant(order["id"])
    assert (body["state"], body["frontEndUrl"]) == ("active", tenant["frontEndUrl"])
    sealed = base64.b64decode(body["access"]["sealed"])
    assert json.loads(SealedBox(buyer).decrypt(sealed)) == {
        "userName": tenant["userName"],
        "password": tenant["password"],
    }
    assert tenant["password"] not in view.raw.decode()
    assert missing.status == 404
    assert receiver.event_types(order["id"]) == [
        "instance.created",
        "instance.renewed",
        "instance.frozen",
        "instance.released",
    ]
    assert list(receiver.tenants) == [order["id"]]
    [row] = json.loads(listed.stdout)
    assert (row["order_id"], row["outcome"], row["instance_id"]) == (order["id"], "released", order["id"])
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    assert {s.labels["status"]: s.value for s in families["isv_vcloud_orders"].samples} == {"OrderPaid": 1}
    runs = {
        s.labels["outcome"]: s.value
        for s in families["isv_periodic_job_runs"].samples
        if s.labels["job"] == "vcloud.orders"
    }
    assert runs["ok"] >= 3
    assert families["isv_vcloud_last_poll_age_seconds"].samples[0].value < 30
    assert TOKEN not in log and tenant["password"] not in log


def test_kill_9_of_the_consumer_mid_page_loses_and_repeats_nothing(
    tmp_path: Path, database_url: str, platform: VCloudPlatform, receiver: WebhookReceiver
) -> None:
    orders = [platform.add_order() for _ in range(5)]  # pages of two
    platform.hold_page(2)
    env = environment(tmp_path, database_url, platform, receiver)
    with running_server(env, tmp_path / "server.log", cwd=tmp_path, workers=1) as server:
        assert wait_until(lambda: len(job_consumers(server.pid)) == 1, 20), "serve started no job consumer"
        [victim] = job_consumers(server.pid)
        # held, not only in flight: the request for page 1 is in flight for a moment too
        assert wait_until(lambda: platform.held == 1, WAIT_S), "the poll never reached page 2"
        assert sorted(instance_states(server.database_url)) == sorted(o["id"] for o in orders[:2])

        os.kill(victim, signal.SIGKILL)  # mid-sweep: page 1 followed, page 2 asked for
        assert wait_until(lambda: victim not in job_consumers(server.pid), 10)
        platform.release_hold()
        assert wait_until(lambda: job_consumers(server.pid) - {victim}, 30), "the consumer was not restarted"
        assert wait_until(lambda: len(instance_states(server.database_url)) == 5, WAIT_S)
        assert receiver.wait_for(
            lambda: len([e for e in receiver.events if e["type"] == "instance.created"]) >= 5, WAIT_S
        )
        created = db_count(server.database_url, "instance_event", "kind = 'created'")
        pages = [r["query"] for r in platform.requests("/api/v1/order")]

    assert sorted(instance_states(server.database_url)) == sorted(o["id"] for o in orders)
    assert created == 5  # one creation per order
    assert sorted(receiver.tenants) == sorted(o["id"] for o in orders)  # one tenant each
    resumed = [q for q in pages[pages.index(next(q for q in pages if "current=2" in q)) + 1 :]]
    assert "current=2" in resumed[0]  # the new consumer went on from the stored page


def test_two_workers_at_once_poll_one_at_a_time(
    tmp_path: Path, database_url: str, platform: VCloudPlatform, receiver: WebhookReceiver
) -> None:
    orders = [platform.add_order() for _ in range(3)]
    env = environment(tmp_path, database_url, platform, receiver, ISV_VCLOUD_POLL_INTERVAL_S="1")
    migrated = run_cli("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.describe()
    platform.hold_page(1)
    workers = []
    try:
        for n in range(2):
            with (tmp_path / f"worker{n}.log").open("ab") as out:
                workers.append(
                    subprocess.Popen(
                        [ISVSERVER, "worker"],
                        env=env,
                        cwd=tmp_path,
                        stdout=out,
                        stderr=out,
                        start_new_session=True,
                    )
                )
        assert wait_until(lambda: platform.in_flight == 1, WAIT_S), "no worker polled"
        holder = db_rows(env["ISV_DATABASE_URL"], "SELECT lease_owner FROM periodic_job")[0][0]
        # Both workers look every interval; the one without the lease must not poll meanwhile.
        time.sleep(3)
        in_flight_while_held = platform.max_in_flight_orders
        platform.release_hold()
        assert wait_until(lambda: len(instance_states(env["ISV_DATABASE_URL"])) == 3, WAIT_S)
        assert wait_until(
            lambda: db_rows(env["ISV_DATABASE_URL"], "SELECT runs FROM periodic_job")[0][0] >= 4, WAIT_S
        )
        runs, failures = db_rows(env["ISV_DATABASE_URL"], "SELECT runs, failures FROM periodic_job")[0]
        owners = {r["authorization"] for r in platform.requests("/api/v1/order")}
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGINT)
        for worker in workers:
            stop_group(worker)

    assert holder is not None
    assert in_flight_while_held == 1
    assert platform.max_in_flight_orders == 1  # never two polls at once, over the whole run
    assert (runs >= 4, failures) == (True, 0)
    assert owners == {f"Bearer {TOKEN}"}
    assert sorted(instance_states(env["ISV_DATABASE_URL"])) == sorted(o["id"] for o in orders)
    assert db_count(env["ISV_DATABASE_URL"], "instance_event", "kind = 'created'") == 3
