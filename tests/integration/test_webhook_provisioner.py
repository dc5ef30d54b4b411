"""The webhook provisioner against a real signature-checking HTTP receiver on loopback, and the loader."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from isvserver.provisioning import AppInfo, InstanceView, LifecycleEvent, ProvisioningError
from isvserver.provisioning.loader import generate_webhook_secret, load_provisioner
from isvserver.provisioning.template import TemplateProvisioner
from isvserver.provisioning.webhook import WebhookError, WebhookProvisioner, event_payload
from isvserver.settings import Settings, SettingsError, load_settings

from support.harness import base_env
from support.receiver import WebhookReceiver, new_secret
from support.sample_provisioner import InlineSample, SampleProvisioner

OCCURRED = datetime(2025, 1, 31, 8, 0, 0, 123000)
EXPIRES = datetime(2026, 1, 31, 8, 0, 0)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A running product webhook endpoint on loopback."""
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
def provisioner(receiver: WebhookReceiver) -> WebhookProvisioner:
    """A webhook provisioner pointed at the receiver with the receiver's secret."""
    return WebhookProvisioner(receiver.url, receiver.secret, timeout_s=2.0)


def make_event(
    kind: str = "instance.created",
    instance_id: str = "inst-1",
    event_id: str | None = None,
    change: dict[str, Any] | None = None,
    order: dict[str, Any] | None = None,
) -> LifecycleEvent:
    """An event as the job runner hands it to a provisioner."""
    instance = InstanceView(
        instance_id=instance_id,
        marketplace="koogallery",
        order_id="CS2501310800ABCDE",
        order_line_id="CS2501310800ABCDE-000001",
        product_id="00301-666666-0--0",
        expire_at=EXPIRES,
        is_trial=False,
        state="provisioning" if kind == "instance.created" else "active",
    )
    return LifecycleEvent(
        id=event_id or f"evt_{uuid.uuid4().hex}",
        type=kind,
        occurred_at=OCCURRED,
        instance=instance,
        change=change if change is not None else {"kind": kind.removeprefix("instance.")},
        order=order,
    )


def assert_safe(message: str, *secrets: str) -> None:
    """A WebhookError message is one line and shows none of the given values."""
    assert "\n" not in message
    for value in secrets:
        assert value not in message


# --- delivery and signatures -----------------------------------------------------------------------


def test_created_event_is_signed_and_answered_with_the_tenants_app_info(
    receiver: WebhookReceiver, provisioner: WebhookProvisioner
) -> None:
    event = make_event()
    info = provisioner.provision(event)

    tenant = receiver.tenant("inst-1")
    assert info == AppInfo(
        front_end_url="https://product.example/t/inst-1",
        admin_url="https://product.example/t/inst-1/admin",
        user_name=tenant["userName"],
        password=tenant["password"],
    )
    assert receiver.rejected == []
    [request] = receiver.requests
    assert request["status"] == 200
    assert request["webhook_id"] == event.id
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["user-agent"] == "isvserver"
    assert abs(int(request["headers"]["webhook-timestamp"]) - time.time()) < 5
    # an independent check of the signature, beyond the receiver's own
    parsed = Webhook(receiver.secret).verify(request["body"], request["headers"])
    assert parsed["type"] == "instance.created"


def test_a_different_secret_is_rejected_by_the_receiver_and_provision_raises(
    receiver: WebhookReceiver,
) -> None:
    other_secret = new_secret()
    wrong = WebhookProvisioner(receiver.url, other_secret, timeout_s=2.0)

    with pytest.raises(WebhookError) as caught:
        wrong.provision(make_event())

    assert caught.value.status == 401
    assert "401" in str(caught.value)
    assert len(receiver.rejected) == 1
    assert receiver.tenants == {}
    signature = receiver.requests[0]["headers"]["webhook-signature"]
    assert signature.startswith("v1,")
    assert_safe(str(caught.value), other_secret, other_secret.removeprefix("whsec_"), signature)


def test_tampered_body_fails_verification() -> None:
    secret = new_secret()
    event = make_event()
    body = json.dumps(event_payload(event), separators=(",", ":"))
    now = datetime.now(UTC)
    headers = {
        "webhook-id": event.id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(event.id, now, body),
    }
    with WebhookReceiver(secret) as receiver:
        assert Webhook(secret).verify(body, headers)
        tampered = body.replace("inst-1", "inst-2").encode()
        request = urllib.request.Request(receiver.url, data=tampered, headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=2)
        caught.value.close()
        assert caught.value.code == 401
        assert receiver.rejected[0]["webhook_id"] == event.id
        assert receiver.tenants == {}


def test_payload_shape(receiver: WebhookReceiver, provisioner: WebhookProvisioner) -> None:
    order = {"orderId": "CS2501310800ABCDE", "amount": 100, "createTime": datetime(2025, 1, 31, 7, 59)}
    change = {"kind": "renewed", "scene": "renew", "expire_at": datetime(2027, 1, 31, 8, 0, tzinfo=UTC)}
    event = make_event("instance.renewed", change=change, order=order)

    provisioner.apply(event)

    [accepted] = receiver.events
    assert accepted["webhook_id"] == event.id
    assert accepted["type"] == "instance.renewed"
    assert accepted["instance_id"] == "inst-1"
    assert accepted["payload"] == {
        "type": "instance.renewed",
        "timestamp": "2025-01-31T08:00:00.123Z",
        "data": {
            "instance": {
                "instanceId": "inst-1",
                "marketplace": "koogallery",
                "orderId": "CS2501310800ABCDE",
                "orderLineId": "CS2501310800ABCDE-000001",
                "productId": "00301-666666-0--0",
                "expireAt": "2026-01-31T08:00:00.000Z",
                "isTrial": False,
                "state": "active",
            },
            "change": {"kind": "renewed", "scene": "renew", "expire_at": "2027-01-31T08:00:00.000Z"},
            "order": {
                "orderId": "CS2501310800ABCDE",
                "amount": 100,
                "createTime": "2025-01-31T07:59:00.000Z",
            },
        },
    }
    body = receiver.requests[0]["body"]
    assert b": " not in body and b", " not in body  # compact
    assert event_payload(event) == accepted["payload"]


def test_payload_without_order_or_expiry_has_nulls(
    receiver: WebhookReceiver, provisioner: WebhookProvisioner
) -> None:
    event = make_event("instance.frozen")
    event = LifecycleEvent(
        event.id,
        event.type,
        event.occurred_at,
        InstanceView("inst-9", "koogallery", "o", "ol", None, None, True, "active"),
    )
    provisioner.apply(event)
    data = receiver.events[0]["payload"]["data"]
    assert data["order"] is None
    assert data["change"] == {}
    assert data["instance"]["expireAt"] is None
    assert data["instance"]["productId"] is None
    assert data["instance"]["isTrial"] is True


def test_a_resent_created_event_keeps_its_id_and_returns_the_same_tenant(
    receiver: WebhookReceiver, provisioner: WebhookProvisioner
) -> None:
    event = make_event()
    first = provisioner.provision(event)
    second = provisioner.provision(event)

    assert second == first
    assert second.password == first.password
    assert len(receiver.tenants) == 1
    assert [e["webhook_id"] for e in receiver.events] == [event.id, event.id]


def test_a_timed_out_created_event_retried_gives_one_tenant(receiver: WebhookReceiver) -> None:
    quick = WebhookProvisioner(receiver.url, receiver.secret, timeout_s=0.3)
    event = make_event()
    receiver.delay_s = 1.0

    started = time.monotonic()
    with pytest.raises(WebhookError, match="timed out") as caught:
        quick.provision(event)
    assert time.monotonic() - started < 0.9
    assert caught.value.status is None

    # the product finishes the slow attempt anyway; the retry must get that same tenant back
    assert receiver.wait_for(lambda: len(receiver.tenants) == 1, timeout=5)
    receiver.delay_s = 0
    info = quick.provision(event)
    assert len(receiver.tenants) == 1
    assert info.password == receiver.tenant("inst-1")["password"]
    assert_safe(str(caught.value), receiver.secret, info.password or "")


LONG = "x" * 600
PASSWORD = "Reply-Pw-1!"
URL = "https://p.example/"


def reply(**app_info: Any) -> str:
    """A product's JSON reply carrying this appInfo."""
    return json.dumps({"appInfo": app_info})


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (503, '{"error": "unavailable"}', "HTTP 503"),
        (500, "", "HTTP 500"),
        (201, reply(frontEndUrl=URL, password=PASSWORD), "HTTP 201"),
        (200, f"<html>{PASSWORD}</html>", "not JSON"),
        (200, json.dumps([PASSWORD]), "no appInfo"),
        (200, reply(userName="u", password=PASSWORD), "no frontEndUrl"),
        (200, reply(frontEndUrl="", password=PASSWORD), "no frontEndUrl"),
        (200, reply(frontEndUrl=[URL], password=PASSWORD), "frontEndUrl is not a string"),
        (200, reply(frontEndUrl=URL, password=123456789), "password is not a string"),
        (200, reply(frontEndUrl=URL, password=PASSWORD + LONG), "password is longer than 128"),
        (200, reply(frontEndUrl=URL + LONG, password=PASSWORD), "longer than 512"),
        (200, reply(frontEndUrl=URL, password=PASSWORD, memo="y" * 70000), "64 KiB"),
    ],
)
def test_a_bad_answer_to_created_raises_without_revealing_values(
    receiver: WebhookReceiver, provisioner: WebhookProvisioner, status: int, body: str, expected: str
) -> None:
    receiver.answer_next(1, status, body)

    with pytest.raises(WebhookError) as caught:
        provisioner.provision(make_event())

    message = str(caught.value)
    assert expected in message
    assert isinstance(caught.value, ProvisioningError)
    assert caught.value.status == status
    assert_safe(message, PASSWORD, "123456789", LONG, receiver.secret, receiver.secret[6:])
    assert_safe(message, receiver.requests[0]["headers"]["webhook-signature"][3:])


def test_a_redirect_is_not_followed(receiver: WebhookReceiver, provisioner: WebhookProvisioner) -> None:
    receiver.redirect_next(1, location=receiver.url + "/moved")

    with pytest.raises(WebhookError, match="redirect") as caught:
        provisioner.provision(make_event())

    assert caught.value.status == 302
    assert len(receiver.requests) == 1
    assert receiver.tenants == {}


def test_a_refused_connection_raises() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = new_secret()
    closed = WebhookProvisioner(f"http://127.0.0.1:{port}/hook", secret, timeout_s=1.0)

    with pytest.raises(WebhookError, match="connection refused") as caught:
        closed.apply(make_event("instance.frozen"))
    assert_safe(str(caught.value), secret)


# --- apply ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 202, 204])
def test_apply_succeeds_on_any_2xx(
    receiver: WebhookReceiver, provisioner: WebhookProvisioner, status: int
) -> None:
    receiver.answer_next(1, status, b"" if status == 204 else b"not even json")
    provisioner.apply(make_event("instance.upgraded"))
    assert [r["status"] for r in receiver.requests] == [status]


def test_apply_raises_on_500_and_timeout(receiver: WebhookReceiver) -> None:
    quick = WebhookProvisioner(receiver.url, receiver.secret, timeout_s=0.3)
    receiver.fail_next(1, status=500)
    with pytest.raises(WebhookError, match="HTTP 500") as caught:
        quick.apply(make_event("instance.frozen"))
    assert caught.value.status == 500

    receiver.delay_s = 1.0
    with pytest.raises(WebhookError, match="timed out"):
        quick.apply(make_event("instance.frozen"))


def test_lifecycle_events_change_the_tenant_in_order(
    receiver: WebhookReceiver, provisioner: WebhookProvisioner
) -> None:
    provisioner.provision(make_event())
    provisioner.apply(make_event("instance.frozen"))
    assert receiver.tenant("inst-1")["state"] == "frozen"
    provisioner.apply(make_event("instance.unfrozen"))
    assert receiver.tenant("inst-1")["state"] == "active"
    provisioner.apply(make_event("instance.released"))

    assert receiver.tenant("inst-1")["state"] == "released"
    assert receiver.event_types("inst-1") == [
        "instance.created",
        "instance.frozen",
        "instance.unfrozen",
        "instance.released",
    ]


def test_a_held_request_is_answered_after_release(
    receiver: WebhookReceiver, provisioner: WebhookProvisioner
) -> None:
    receiver.hold()
    results: list[AppInfo] = []
    worker = threading.Thread(target=lambda: results.append(provisioner.provision(make_event())))
    worker.start()
    assert receiver.wait_for(lambda: receiver.held == 1)
    assert receiver.tenants == {}
    receiver.release_hold()
    worker.join(timeout=5)
    assert results and results[0].front_end_url == "https://product.example/t/inst-1"


def test_check_change_repr_and_inline(provisioner: WebhookProvisioner, receiver: WebhookReceiver) -> None:
    assert provisioner.inline is False
    assert provisioner.check_change(make_event().instance, {"spec": "anything"}) is None
    assert receiver.secret not in repr(provisioner)
    assert receiver.secret[6:] not in repr(provisioner)
    assert receiver.url in repr(provisioner)


def test_construction_rejects_a_bad_url_or_secret_without_showing_it() -> None:
    with pytest.raises(ValueError, match="http") as caught:
        WebhookProvisioner("ftp://files.example/hook", new_secret())
    assert "files.example" not in str(caught.value)
    for secret in ("whsec_c2hvcnQtc2VjcmV0", "c2hvcnQtc2VjcmV0c2hvcnQtc2VjcmV0c2hvcnQtc2VjcmV0", ""):
        with pytest.raises(ValueError, match="whsec_") as caught:
            WebhookProvisioner("https://product.example/hook", secret)
        assert secret.removeprefix("whsec_") not in str(caught.value) or not secret


def test_repr_hides_a_password_in_the_url() -> None:
    hook = WebhookProvisioner("https://user:hunter2pass@product.example/hook", new_secret())
    assert "hunter2pass" not in repr(hook)


# --- the loader ----------------------------------------------------------------------------------


def settings_for(tmp_path: Path, **env: str) -> Settings:
    """Validated production settings with these ISV_* overrides."""
    return load_settings(base_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}", **env))


def test_loader_template(tmp_path: Path) -> None:
    chosen = load_provisioner(settings_for(tmp_path))
    assert isinstance(chosen, TemplateProvisioner)
    assert chosen.inline is True
    assert chosen.frontend_url_template == "https://app.example.com/t/{instance_id}"


def test_loader_webhook_with_a_generated_secret(tmp_path: Path) -> None:
    secret = generate_webhook_secret()
    assert secret.startswith("whsec_") and len(secret) == 6 + 44
    assert generate_webhook_secret() != secret
    with WebhookReceiver(secret) as receiver:
        settings = settings_for(
            tmp_path,
            ISV_PROVISIONER="webhook",
            ISV_WEBHOOK_URL=receiver.url,
            ISV_WEBHOOK_SECRET=secret,
            ISV_WEBHOOK_TIMEOUT_S="1.5",
        )
        chosen = load_provisioner(settings)
        assert isinstance(chosen, WebhookProvisioner)
        assert chosen.inline is False
        assert chosen.timeout_s == 1.5
        info = chosen.provision(make_event())
        assert info.front_end_url == "https://product.example/t/inst-1"
        assert receiver.rejected == []


def test_loader_python_class(tmp_path: Path) -> None:
    chosen = load_provisioner(
        settings_for(tmp_path, ISV_PROVISIONER="python:support.sample_provisioner:SampleProvisioner")
    )
    assert isinstance(chosen, SampleProvisioner)
    assert chosen.inline is False
    assert chosen.check_change(make_event().instance, {"spec": "huge"}) == "no such spec"

    inline = load_provisioner(
        settings_for(tmp_path, ISV_PROVISIONER="python:support.sample_provisioner:InlineSample")
    )
    assert isinstance(inline, InlineSample)
    assert inline.inline is True


def test_loader_python_class_without_inline_that_takes_no_attributes(tmp_path: Path) -> None:
    chosen = load_provisioner(
        settings_for(tmp_path, ISV_PROVISIONER="python:support.sample_provisioner:SlottedSample")
    )
    assert chosen.inline is False
    assert chosen.provision(make_event()).front_end_url == "https://slotted.example/"
    assert chosen.check_change(make_event().instance, {}) == "never"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("python:support.no_such_module:Anything", "there is no module support.no_such_module"),
        ("python:no_such_package.sub:Anything", "there is no module no_such_package.sub"),
        ("python:broken_provisioner:Anything", "module broken_provisioner failed: RuntimeError: boom"),
        ("python:needs_dependency:Anything", "No module named 'not_installed_dependency'"),
        (
            "python:support.sample_provisioner:NoSuchClass",
            "support.sample_provisioner has no class NoSuchClass",
        ),
        ("python:support.sample_provisioner:NOT_A_CLASS", "is not a class"),
        ("python:support.sample_provisioner:MissingApply", "class MissingApply lacks apply, check_change"),
        ("python:support.sample_provisioner:NeedsArguments", "NeedsArguments() failed"),
    ],
)
def test_loader_python_errors_are_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, expected: str
) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "broken_provisioner.py").write_text("raise RuntimeError('boom')\n")
    (modules / "needs_dependency.py").write_text("import not_installed_dependency\n")
    monkeypatch.syspath_prepend(str(modules))
    settings = settings_for(tmp_path, ISV_PROVISIONER=spec)

    with pytest.raises(SettingsError) as caught:
        load_provisioner(settings)

    message = str(caught.value)
    assert expected in message
    assert message.startswith(f"ISV_PROVISIONER={spec}: ")
    assert "Traceback" not in message and "\n" not in message
    assert caught.value.__cause__ is None  # no chained traceback under the message
    assert caught.value.__context__ is None or caught.value.__suppress_context__
