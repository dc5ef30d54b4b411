"""The call pipeline's edges, as the marketplace sees them: the body limit to the byte (sized or
chunked), a body that cannot be read, and what the log line of a rejected call leaves out."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from isvserver import create_app, db
from isvserver.db import connected
from isvserver.marketplaces.koogallery.marketplace import encode_body, signed_query
from isvserver.marketplaces.koogallery.signing import body_sign_valid
from isvserver.models import CallLog
from isvserver.settings import Settings, load_settings

from support.harness import ACCESS_KEY, FixedClock, Marketplace

LIMIT = 2048


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    """A 2 KiB body limit."""
    return load_settings({**env, "ISV_MAX_BODY_BYTES": str(LIMIT)})


@pytest.fixture
def app(settings: Settings, clock: FixedClock) -> Iterator[Flask]:
    application = create_app(settings, clock=clock)
    yield application
    db.close_all()


def padded(body: dict[str, Any], size: int) -> bytes:
    """The body's JSON followed by spaces (still the same JSON object) to exactly `size` bytes."""
    raw = encode_body(body)
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def rows() -> list[CallLog]:
    with connected():
        return list(CallLog.select().order_by(CallLog.id))


def post_signed(client: FlaskClient, raw: bytes, chunked: bool = False) -> tuple[int, dict[str, Any]]:
    """POST `raw` signed with the access key (sized, or as a chunked stream); status and reply, whose
    Body-Sign is checked."""
    path = f"/saasproduce?{signed_query(ACCESS_KEY, raw)}"
    if chunked:
        response = client.post(
            path,
            input_stream=io.BytesIO(raw),
            headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json;charset=utf8"},
            environ_overrides={"wsgi.input_terminated": True},
        )
    else:
        response = client.post(path, data=raw, headers={"Content-Type": "application/json;charset=utf8"})
    assert body_sign_valid(ACCESS_KEY, response.data, response.headers.get("Body-Sign"))
    return response.status_code, json.loads(response.data)


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
def test_a_body_of_exactly_the_limit_is_answered_and_one_byte_more_is_refused(
    client: FlaskClient, marketplace: Marketplace, chunked: bool
) -> None:
    instance_id = marketplace.new_instance("CS-LIMIT").json["instanceId"]
    query = {"activity": "queryInstance", "instanceId": instance_id}

    status, reply = post_signed(client, padded(query, LIMIT), chunked)
    assert (status, reply["resultCode"]) == (200, "000000")
    assert [info["instanceId"] for info in reply["info"]] == [instance_id]

    status, reply = post_signed(client, padded(query, LIMIT + 1), chunked)
    assert (status, reply["resultCode"]) == (413, "000002")
    assert reply["resultMsg"] == f"request body is larger than {LIMIT} bytes"
    last = rows()[-1]
    assert (last.verdict, last.reason, last.result_code) == (
        "body_too_large",
        f"body over {LIMIT} bytes",
        "000002",
    )


def test_a_body_far_over_the_limit_changes_nothing(client: FlaskClient) -> None:
    new = {"activity": "newInstance", "orderId": "CS-BIG", "orderLineId": "CS-BIG-1", "businessId": "b"}
    status, reply = post_signed(client, padded(new, 10 * LIMIT))
    assert (status, reply["resultCode"]) == (413, "000002")
    from isvserver.models import Instance

    with connected():
        assert Instance.select().count() == 0


class BrokenStream(io.BytesIO):
    """A request body whose reading fails after its first bytes, as gunicorn's chunk parser does on a
    lying chunk."""

    def readinto(self, buffer: Any) -> int:
        if self.tell() == 0:
            return super().readinto(memoryview(buffer)[:2])
        raise OSError("chunk size mismatch")

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() == 0:
            return super().read(2)
        raise OSError("chunk size mismatch")


def test_a_body_that_cannot_be_read_gets_a_signed_malformed_answer(client: FlaskClient) -> None:
    raw = encode_body({"activity": "queryInstance", "instanceId": "x"})
    response = client.post(
        f"/saasproduce?{signed_query(ACCESS_KEY, raw)}",
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json;charset=utf8"},
        environ_overrides={"wsgi.input_terminated": True, "wsgi.input": BrokenStream(raw)},
    )
    assert response.status_code == 200
    assert body_sign_valid(ACCESS_KEY, response.data, response.headers.get("Body-Sign"))
    assert response.get_json() == {"resultCode": "000002", "resultMsg": "the request body is malformed"}
    (row,) = rows()
    assert (row.verdict, row.reason) == (
        "malformed_body",
        "the body could not be read (broken chunked encoding)",
    )


BUYER = "张三 13800138000 zhang.san@example.com"


def test_the_log_line_of_a_rejected_call_keeps_ids_and_leaves_out_other_text(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    body = {
        "activity": "newInstance",
        "orderId": BUYER,
        "orderLineId": "L" * 300,
        "instanceId": "i-" + "9" * 100,
        "businessId": "biz-1",
    }
    raw = encode_body(body)
    with caplog.at_level(logging.INFO, logger="isvserver.calls"):
        client.post(f"/saasproduce?signature={'A' * 64}&timestamp=1&nonce=n", data=raw)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("call ")]
    assert "verdict=bad_timestamp code=000002" in line
    assert f"instance={'i-' + '9' * 62} order=-/{'L' * 64}" in line
    assert "张三" not in line and "13800138000" not in line and "example.com" not in line


def test_the_log_line_of_a_rejected_call_names_only_a_known_activity(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="isvserver.calls"):
        for activity in ("queryInstance", "queryInstance<script>", "newInstance" + "x" * 40):
            raw = encode_body({"activity": activity, "instanceId": "i-1"})
            client.post(f"/saasproduce?signature={'A' * 64}&timestamp=1&nonce=n", data=raw)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("call ")]
    assert [line.split()[2] for line in lines] == [
        "activity=queryInstance",
        "activity=None",
        "activity=None",
    ]


def source_of(client: FlaskClient, peer: str, forwarded: str | None) -> str | None:
    """The source address the call log stores for a call from `peer` with this X-Forwarded-For."""
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    client.post("/saasproduce", data=b"{}", headers=headers, environ_base={"REMOTE_ADDR": peer})
    return rows()[-1].source_address


@pytest.mark.parametrize(
    ("peer", "forwarded", "source"),
    [
        ("127.0.0.1", "10.0.0.1, 192.0.2.7", "192.0.2.7"),  # the hop the trusted proxy added
        ("127.0.0.1", " 192.0.2.7 ", "192.0.2.7"),
        ("127.0.0.1", "192.0.2.7, , ", "192.0.2.7"),
        ("127.0.0.1", " , ,", "127.0.0.1"),  # no hop named: the proxy itself
        ("127.0.0.1", "", "127.0.0.1"),
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "f" * 100, "f" * 64),
        ("10.9.9.9", "192.0.2.8", "10.9.9.9"),  # an untrusted peer names no one else
    ],
)
def test_the_source_is_the_peer_or_the_last_hop_of_a_trusted_proxy(
    client: FlaskClient, peer: str, forwarded: str | None, source: str
) -> None:
    assert source_of(client, peer, forwarded) == source


@pytest.mark.parametrize("trusted", ["*", "10.9.9.9"])
def test_a_proxy_is_trusted_by_name_or_by_star(env: dict[str, str], clock: FixedClock, trusted: str) -> None:
    app = create_app(load_settings({**env, "ISV_FORWARDED_ALLOW_IPS": trusted}), clock=clock)
    try:
        assert source_of(app.test_client(), "10.9.9.9", "192.0.2.8") == "192.0.2.8"
    finally:
        db.close_all()


def test_keys_that_cannot_be_read_get_a_signed_retry_answer(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database cannot say which keys are active: an internal error the marketplace retries, signed
    with the configured key, and the call logged as such."""

    def unreadable(*args: object) -> tuple[str, ...]:
        raise OSError("database is locked")

    monkeypatch.setattr("isvserver.keystore.verification_keys", unreadable)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("isvserver.calls").addHandler(handler)
    try:
        status, reply = post_signed(client, encode_body({"activity": "queryInstance", "instanceId": "x"}))
    finally:
        logging.getLogger("isvserver.calls").removeHandler(handler)
    (unreadable_line,) = [r for r in records if r.getMessage().startswith("access keys not readable")]
    assert unreadable_line.getMessage() == f"access keys not readable request_id={rows()[-1].request_id}"
    assert (status, reply) == (
        200,
        {"resultCode": "000005", "resultMsg": "internal error; the call can be retried"},
    )
    (row,) = rows()
    assert (row.verdict, row.reason, row.result_code) == (
        "keys_unavailable",
        "access keys could not be read from the database",
        "000005",
    )


def test_text_that_only_looks_like_an_escaped_nul_is_accepted(marketplace: Marketplace) -> None:
    """A backslash followed by u0000 is six characters of text, not a NUL: the call is answered."""
    answer = marketplace.new_instance("CS-BACKSLASH", customerName="D:\\u0000\\tenants")
    assert answer.code == "000000", answer.json
    nul = marketplace.new_instance("CS-NUL", customerName="D:\x00")
    assert nul.code == "000002" and "NUL" in nul.json["resultMsg"]


def test_an_error_answer_is_signed_with_the_first_active_key(settings: Settings, client: FlaskClient) -> None:
    """A 405 outside the call flow: signed with the first key still active (the first of ISV_ACCESS_KEYS
    retired: the second), or with the first configured key when the database cannot say."""
    from isvserver.keystore import fingerprint, retire_key

    from support.harness import SECOND_ACCESS_KEY

    def method_not_allowed() -> Any:
        response = client.put("/saasproduce")  # GET is V1 on this path
        assert response.status_code == 405
        return response

    first = method_not_allowed()
    assert body_sign_valid(ACCESS_KEY, first.data, first.headers["Body-Sign"])
    retire_key(settings, fingerprint(ACCESS_KEY))
    second = method_not_allowed()
    assert body_sign_valid(SECOND_ACCESS_KEY, second.data, second.headers["Body-Sign"])
    assert second.get_json()["resultCode"] == "000002"


def test_an_error_answer_is_signed_with_the_configured_key_when_the_database_cannot_say(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(*args: object) -> tuple[str, ...]:
        raise OSError("database is locked")

    monkeypatch.setattr("isvserver.keystore.verification_keys", unreadable)
    response = client.put("/saasproduce")  # GET is V1 on this path
    assert response.status_code == 405
    assert body_sign_valid(ACCESS_KEY, response.data, response.headers["Body-Sign"])


def test_a_replayed_call_is_logged_with_its_reason(client: FlaskClient, marketplace: Marketplace) -> None:
    body = {"activity": "queryInstance", "instanceId": "nobody"}
    query = signed_query(ACCESS_KEY, encode_body(body))
    assert marketplace.send(body, query=query).code == "000003"
    replayed = marketplace.send(body, query=query)
    assert replayed.json == {
        "resultCode": "000001",
        "resultMsg": "authentication failed: nonce was already used",
    }
    last = rows()[-1]
    assert (last.verdict, last.reason) == ("replayed_nonce", "nonce was already used")


class Queued:
    """A provisioner that is not inline: newInstance queues the creation after its commit."""

    inline = False

    def provision(self, event: Any) -> Any:
        from isvserver.provisioning import AppInfo

        return AppInfo(front_end_url="https://app.example/t")

    def apply(self, event: Any) -> None:
        return None

    def check_change(self, instance: Any, product_info: dict[str, Any]) -> str | None:
        return None


def test_a_failing_after_commit_step_is_logged_and_the_committed_answer_stands(
    env: dict[str, str], clock: FixedClock
) -> None:
    """The queue cannot be reached after the call committed: the marketplace still gets its answer,
    the operator a log line naming the call; the committed creation waits for the sweeper."""
    import dataclasses

    from isvserver.models import Delivery

    settings = dataclasses.replace(load_settings(env), provision_budget_ms=0)
    app = create_app(settings, provisioner=Queued(), clock=clock)
    try:

        def unreachable(*args: object, **kwargs: object) -> None:
            raise ConnectionError("queue down")

        app.extensions["isvserver"].jobs.deliver_soon = unreachable
        market = Marketplace(app.test_client())
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        logging.getLogger("isvserver.calls").addHandler(handler)  # create_app set the logging up anew
        try:
            answer = market.new_instance("CS-AFTER", business_id="after-1")
        finally:
            logging.getLogger("isvserver.calls").removeHandler(handler)
        assert answer.code == "000004", answer.json  # in progress: the creation is committed, queued
        request_id = answer.headers["X-Request-Id"]
        failed = [r for r in records if r.getMessage().startswith("after-commit step failed")]
        assert [r.getMessage() for r in failed] == [
            f"after-commit step failed request_id={request_id} activity=newInstance"
        ]
        assert failed[0].exc_info is not None and failed[0].exc_info[0] is ConnectionError
        with connected():
            assert [d.status for d in Delivery.select()] == ["pending"]
    finally:
        db.close_all()


def test_a_repeat_counted_outside_a_call_is_a_duplicate_of_an_unknown_interface(app: Flask) -> None:
    from prometheus_client import REGISTRY

    from isvserver.calls import counted

    def duplicates(interface: str) -> float:
        labels = {"interface": interface, "kind": "business_key"}
        return REGISTRY.get_sample_value("isv_duplicates_total", labels) or 0.0

    before = duplicates("unknown")
    with app.test_request_context():
        assert counted(True) is True
        assert counted(False) is False
    assert duplicates("unknown") == before + 1


def test_only_a_replayed_nonce_counts_as_a_nonce_duplicate_and_latency_is_in_seconds(
    client: FlaskClient, marketplace: Marketplace
) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"interface": "koogallery.v2", **labels}) or 0.0

    body = {"activity": "queryInstance", "instanceId": "nobody"}
    query = signed_query(ACCESS_KEY, encode_body(body))
    nonce_before = sample("isv_duplicates_total", kind="nonce")
    seconds_before = sample("isv_request_duration_seconds_sum", activity="queryInstance")
    assert marketplace.send(body, query=query).code == "000003"
    assert sample("isv_duplicates_total", kind="nonce") == nonce_before
    assert marketplace.send(body, query=query).code == "000001"
    assert sample("isv_duplicates_total", kind="nonce") == nonce_before + 1
    spent = sample("isv_request_duration_seconds_sum", activity="queryInstance") - seconds_before
    assert 0 < spent < 60  # two calls through the test client: seconds, not milliseconds
