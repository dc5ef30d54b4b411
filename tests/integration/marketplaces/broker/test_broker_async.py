"""Asynchronous operations: a provisioner that is not inline, 202 + operation, polling, concurrency."""

from __future__ import annotations

from typing import Any

import pytest

from isvserver.db import connected
from isvserver.jobs.deliveries import DELIVERED
from isvserver.lifecycle import complete_provisioning, fail_provisioning
from isvserver.models import Delivery, Instance
from isvserver.provisioning import AppInfo

from .conftest import Platform

CREATE = {"service_id": "svc-gold", "plan_id": "plan-small", "parameters": {"seats": 1}}
OSB = {"X-Broker-API-Version": "2.17"}


class QueuedProvisioner:
    """Not inline: every change waits in the outbox for a consumer (none runs here)."""

    inline = False

    def provision(self, event: Any) -> AppInfo:
        return AppInfo(front_end_url="https://app.example/t")

    def apply(self, event: Any) -> None:
        return None

    def check_change(self, instance: Any, product_info: Any) -> None:
        return None


@pytest.fixture
def provisioner() -> QueuedProvisioner:
    return QueuedProvisioner()


@pytest.fixture
def settings(settings: Any) -> Any:
    from dataclasses import replace

    return replace(settings, provision_budget_ms=0)  # AppCube's wait for provisioning ends at once


def deliver_all() -> None:
    with connected():
        Delivery.update(status=DELIVERED).execute()


def test_async_provisioning_is_polled_to_success(platform: Platform, app: Any) -> None:
    path = "/service_instances/async-1"
    accepted = platform.call("PUT", f"{path}?accepts_incomplete=true", CREATE, **OSB)
    assert accepted.status_code == 202
    operation = accepted.get_json()["operation"]

    again = platform.call("PUT", f"{path}?accepts_incomplete=true", CREATE, **OSB)
    assert (again.status_code, again.get_json()) == (202, {"operation": operation})
    polled = platform.call("GET", f"{path}/last_operation?operation={operation}", **OSB)
    assert (polled.status_code, polled.get_json()["state"]) == (200, "in progress")
    assert polled.headers["Retry-After"] == "5"
    busy = platform.call("DELETE", f"{path}?accepts_incomplete=true", **OSB)
    assert (busy.status_code, busy.get_json()["error"]) == (422, "ConcurrencyError")
    busy = platform.call("PATCH", path, {"service_id": "svc-gold", "plan_id": "plan-large"}, **OSB)
    assert (busy.status_code, busy.get_json()["error"]) == (422, "ConcurrencyError")

    with app.app_context(), connected():
        complete_provisioning("async-1", AppInfo(front_end_url="https://app.example/t"), b"0" * 32)
    done = platform.call("GET", f"{path}/last_operation?operation={operation}", **OSB)
    assert (done.status_code, done.get_json()["state"]) == (200, "succeeded")
    assert "Retry-After" not in done.headers
    assert platform.call("PUT", f"{path}?accepts_incomplete=true", CREATE, **OSB).status_code == 200

    upgrade = platform.call(
        "PATCH", f"{path}?accepts_incomplete=true", {"service_id": "svc-gold", "plan_id": "plan-large"}, **OSB
    )
    assert upgrade.status_code == 202
    polled = platform.call("GET", f"{path}/last_operation", **OSB)
    assert polled.get_json()["state"] == "in progress"
    deliver_all()

    delete = platform.call("DELETE", f"{path}?accepts_incomplete=true", **OSB)
    assert delete.status_code == 202
    delete_op = delete.get_json()["operation"]
    resent = platform.call("DELETE", f"{path}?accepts_incomplete=true", **OSB)
    assert (resent.status_code, resent.get_json()) == (202, {"operation": delete_op})
    deliver_all()
    assert platform.call("GET", f"{path}/last_operation?operation={delete_op}", **OSB).status_code == 410
    assert platform.call("DELETE", f"{path}?accepts_incomplete=true", **OSB).status_code == 410


def test_an_osb_platform_that_does_not_accept_incomplete_gets_async_required(platform: Platform) -> None:
    refused = platform.call("PUT", "/service_instances/async-2", CREATE, **OSB)
    assert (refused.status_code, refused.get_json()["error"]) == (422, "AsyncRequired")
    with connected():
        assert Instance.select().count() == 0


def test_appcube_without_accepts_incomplete_gets_an_operation_to_poll(platform: Platform) -> None:
    accepted = platform.call("PUT", "/service_instances/async-3", CREATE)  # no version header: AppCube
    assert accepted.status_code == 202
    assert accepted.get_json()["operation"].startswith("op-")


def test_a_failed_provisioning_is_a_failed_operation_and_a_resend_restarts_it(
    platform: Platform, app: Any
) -> None:
    path = "/service_instances/async-4"
    operation = platform.call("PUT", f"{path}?accepts_incomplete=true", CREATE, **OSB).get_json()["operation"]
    with app.app_context(), connected():
        fail_provisioning("async-4", "the product is full")
    failed = platform.call("GET", f"{path}/last_operation?operation={operation}", **OSB).get_json()
    assert (failed["state"], failed["description"]) == ("failed", "provisioning failed: the product is full")
    again = platform.call("PUT", f"{path}?accepts_incomplete=true", CREATE, **OSB)
    assert (again.status_code, again.get_json()) == (202, {"operation": operation})
    polled = platform.call("GET", f"{path}/last_operation?operation={operation}", **OSB)
    assert polled.get_json()["state"] == "in progress"
    elsewhere = platform.call("PUT", "/service_instances/async-5?accepts_incomplete=true", CREATE, **OSB)
    foreign = elsewhere.get_json()["operation"]
    other = platform.call("GET", f"{path}/last_operation?operation={foreign}", **OSB)
    assert other.status_code == 400  # another instance's operation is not this one's


@pytest.mark.parametrize(("outcome", "status"), [("active", 201), ("failed", 500), ("provisioning", 202)])
def test_appcube_waits_for_the_product_within_the_budget(
    platform: Platform, app: Any, monkeypatch: pytest.MonkeyPatch, outcome: str, status: int
) -> None:
    """The wait itself is the core's (calls.wait_after_commit, tested there); here what it ends in."""
    import time

    from isvserver.deferred import after_commit
    from isvserver.marketplaces.broker import handlers

    def product_answers(instance_id: str, until: float) -> str:
        if outcome == "active":
            complete_provisioning(instance_id, AppInfo(front_end_url="https://app.example/t"), b"0" * 32)
        return outcome

    monkeypatch.setattr(
        handlers, "wait_after_commit", lambda budget, wait: after_commit(lambda: wait(time.monotonic() + 1))
    )
    monkeypatch.setattr(handlers.lifecycle, "await_provisioning", product_answers)
    answer = platform.call("PUT", "/service_instances/wait-1", CREATE)  # no version header: AppCube
    assert answer.status_code == status, answer.data
    if status == 201:
        assert answer.get_json()["dashboard_url"] == "https://app.example/t"
    if status == 202:
        assert answer.get_json()["operation"].startswith("op-")
