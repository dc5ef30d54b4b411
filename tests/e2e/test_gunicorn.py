"""isvserver under gunicorn with several workers: the simulated flow, concurrency, logs and replies."""

from __future__ import annotations

import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from support.harness import ACCESS_KEY, DATA_KEY, NOTIFY_KEY, SECOND_ACCESS_KEY
from support.server import (
    PRODUCE_PATH,
    Reply,
    Server,
    Signed,
    db_count,
    db_rows,
    encode,
    http_request,
    post_signed,
    run_cli,
    sign,
    subprocess_env,
)

pytestmark = pytest.mark.e2e

CONCURRENT_CALLS = 50
WRONG_KEY = "not-the-configured-key-0815"
SMALL_BODY_LIMIT = {"ISV_MAX_BODY_BYTES": "2048"}


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12].upper()}"


def _all_at_once(calls: list[dict[str, Any]], server: Server) -> list[tuple[Reply, Signed]]:
    """POST every body from its own thread, released together, each freshly signed."""
    barrier = threading.Barrier(len(calls))

    def one(body: dict[str, Any]) -> tuple[Reply, Signed]:
        raw = encode(body)
        signed = sign(ACCESS_KEY, raw)
        barrier.wait(timeout=60)
        return post_signed(server, raw, signed=signed)

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(one, calls))


def _new_instance(order_id: str, line: str) -> dict[str, Any]:
    return {
        "activity": "newInstance",
        "orderId": order_id,
        "orderLineId": line,
        "businessId": str(uuid.uuid4()),
    }


# --- isvserver simulate flow ---------------------------------------------------------------------


def test_simulate_flow_against_gunicorn(server: Server) -> None:
    """The whole life of an instance passes; with --test nothing is stored; a wrong key fails."""
    marketplace = subprocess_env({"ISV_SIGN_KEY": ACCESS_KEY})

    debug = run_cli("simulate", "flow", server.url, "--test", env=marketplace)
    assert debug.returncode == 0, debug.describe()
    assert "all answers right" in debug.output, debug.describe()
    assert db_count(server.database_url, "instance") == 0, "a testFlag=1 flow created instances"
    assert db_count(server.database_url, "instance_event") == 0, "a testFlag=1 flow recorded events"
    assert db_count(server.database_url, "callback_log", "test_flag = ?", (True,)) > 0, "calls not logged"

    real = run_cli("simulate", "flow", server.url, env=marketplace)
    assert real.returncode == 0, real.describe()
    assert "all answers right" in real.output, real.describe()
    # The V2 flow's instance, then the V1 flow's (V1 runs after V2 on the same URL; its License part is
    # skipped: this server has no ISV_LICENSE_SIGNING_KEY).
    rows = db_rows(server.database_url, "SELECT state, released_at, creation_key FROM instance ORDER BY id")
    assert len(rows) == 2, rows
    assert not rows[0][2].startswith("v1:") and rows[1][2].startswith("v1:instance:"), rows
    assert all(row[0] == "released" and row[1] is not None for row in rows), rows
    assert "v1 flow: all answers right" in real.output, real.describe()

    wrong = run_cli("simulate", "flow", server.url, env=subprocess_env({"ISV_SIGN_KEY": WRONG_KEY}))
    assert wrong.returncode != 0, wrong.describe()
    assert "all answers right" not in wrong.output, wrong.describe()
    assert db_count(server.database_url, "instance") == 2


# --- concurrency across workers -----------------------------------------------------------------


def test_concurrent_new_instance_calls_across_workers(server: Server) -> None:
    """Over 3 workers: 50 resends of one newInstance at once make one row, one `created` event and
    one id; then 50 different order lines at once make 50 rows with 50 distinct ids."""
    url = server.database_url

    # 50 duplicates: same orderId/orderLineId, each with its own businessId, nonce and signature.
    order_id = _unique("DUP")
    line = f"{order_id}-000001"
    calls = [_new_instance(order_id, line) for _ in range(CONCURRENT_CALLS)]
    answers = _all_at_once(calls, server)

    problems = []
    for reply, _ in answers:
        if reply.status != 200 or not reply.signed_by(ACCESS_KEY):
            problems.append(f"HTTP {reply.status}, Body-Sign {reply.body_sign!r}: {reply.raw[:200]!r}")
        elif reply.json.get("resultCode") not in ("000000", "000004"):
            problems.append(f"answer {reply.json}")
    assert not problems, f"{len(problems)} bad answers to resends, e.g. {problems[:3]}"
    ids = {reply.json.get("instanceId") for reply, _ in answers}
    assert len(ids) == 1, f"resends got different instanceIds: {ids}"
    (instance_id,) = ids
    assert instance_id in {c["businessId"] for c in calls}, "instanceId is not the first call's businessId"
    rows = db_rows(url, "SELECT id, instance_id FROM instance WHERE order_id = ?", (order_id,))
    assert len(rows) == 1, f"{len(rows)} instance rows for one order line"
    assert rows[0][1] == instance_id
    created = db_count(url, "instance_event", "instance_ref = ? AND kind = ?", (rows[0][0], "created"))
    assert created == 1, f"{created} `created` events for one instance"

    pids = server.call_pids(f"order={order_id}/")
    assert len(pids) == CONCURRENT_CALLS, f"{len(pids)} of {CONCURRENT_CALLS} calls were logged"
    assert server.pid not in pids, "the master answered a call"
    assert len(set(pids)) >= 2, f"one worker answered every call ({set(pids)}): nothing ran concurrently"

    # 50 distinct order lines at once.
    many = _unique("MANY")
    calls = [_new_instance(many, f"{many}-{n:06d}") for n in range(1, CONCURRENT_CALLS + 1)]
    answers = _all_at_once(calls, server)

    for reply, _ in answers:
        assert reply.status == 200 and reply.signed_by(ACCESS_KEY), reply.raw
        assert reply.json["resultCode"] in ("000000", "000004"), reply.json
    answered = {
        c["orderLineId"]: reply.json["instanceId"] for c, (reply, _) in zip(calls, answers, strict=True)
    }
    assert len(set(answered.values())) == CONCURRENT_CALLS, "two order lines share an instanceId"
    rows = db_rows(url, "SELECT order_line_id, instance_id FROM instance WHERE order_id = ?", (many,))
    assert len(rows) == CONCURRENT_CALLS, f"{len(rows)} rows for {CONCURRENT_CALLS} order lines"
    assert dict(rows) == answered, "an answer does not name the row of its order line"
    assert db_count(url, "instance") == CONCURRENT_CALLS + 1
    assert db_count(url, "instance_event", "kind = ?", ("created",)) == CONCURRENT_CALLS + 1
    assert len(set(server.call_pids(f"order={many}/"))) >= 2


# --- logs and replies ----------------------------------------------------------------------------


ACCESS_LINE = re.compile(
    r'^\S+ "(?P<method>[A-Z]+) (?P<target>\S+) (?P<proto>HTTP/[\d.]+)" (?P<status>\d{3}) '
)


def _access_lines(log: str) -> list[re.Match[str]]:
    return [m for line in log.splitlines() if (m := ACCESS_LINE.match(line))]


@pytest.mark.parametrize("server_overrides", [SMALL_BODY_LIMIT], ids=["max-body-2048"])
def test_logs_hold_no_secrets_and_no_query_strings(server: Server) -> None:
    """After real traffic (good, replayed, wrongly signed, 405, 413) the log shows paths only."""
    order_id = _unique("LOG")
    sent: list[Signed] = []
    secrets_seen: list[str] = []

    def post(body: dict[str, Any] | bytes, key: str = ACCESS_KEY, signed: Signed | None = None) -> Reply:
        reply, used = post_signed(server, body, key, signed)
        sent.append(used)
        return reply

    new = post(_new_instance(order_id, f"{order_id}-000001"))
    assert new.json["resultCode"] == "000000", new.json
    instance_id = new.json["instanceId"]
    query_body = {"activity": "queryInstance", "instanceId": instance_id}
    query = post(query_body)
    app_info = query.json["info"][0]["appInfo"]
    assert app_info.get("password"), query.json
    secrets_seen.append(app_info["password"])
    assert post(query_body, signed=sent[-1]).json["resultCode"] == "000001"  # replayed nonce
    assert post(query_body, key=WRONG_KEY).json["resultCode"] == "000001"
    assert post(query_body, key=SECOND_ACCESS_KEY).json["resultCode"] == "000000"
    notify = {"activity": "orderNotify", "orderId": order_id, "orderLineId": f"{order_id}-000001"}
    assert post(notify, key=NOTIFY_KEY).json["resultCode"] == "000000"
    debug = post({**_new_instance(order_id, f"{order_id}-000002"), "testFlag": "1"})
    assert debug.json["resultCode"] == "000000"
    expected_posts = len(sent) + 1  # every signed POST and the oversized one below
    get_signed = sign(ACCESS_KEY, b"")  # PUT: a method no generation uses (GET is KooGallery V1)
    assert http_request(server.base, "PUT", f"{PRODUCE_PATH}?{get_signed.query}").status == 405
    big = encode({**query_body, "pad": "x" * 4000})
    big_signed = sign(ACCESS_KEY, big)
    assert http_request(server.base, "POST", f"{PRODUCE_PATH}?{big_signed.query}", big).status == 413
    sent += [get_signed, big_signed]

    def settled(text: str) -> bool:
        posts = [m for m in _access_lines(text) if m["method"] == "POST"]
        return len(posts) >= expected_posts and f'"PUT {PRODUCE_PATH} HTTP/1.1" 405 ' in text

    log = server.wait_for_log(settled)
    assert "signature=" not in log
    assert "nonce=" not in log and "timestamp=" not in log
    forbidden = {
        "access key": ACCESS_KEY,
        "second access key": SECOND_ACCESS_KEY,
        "notify key": NOTIFY_KEY,
        "data key": DATA_KEY,
        "wrong key": WRONG_KEY,
        **{f"password {n}": p for n, p in enumerate(secrets_seen)},
        **{f"nonce {n}": s.nonce for n, s in enumerate(sent)},
        **{f"signature {n}": s.signature for n, s in enumerate(sent)},
    }
    leaked = [what for what, value in forbidden.items() if value in log or value.lower() in log]
    assert not leaked, f"the server log contains: {leaked}"

    access = _access_lines(log)
    posts = [m for m in access if m["method"] == "POST"]
    assert len(posts) == expected_posts, "not every call has an access log line"
    assert all(m.group(0).startswith(f'127.0.0.1 "POST {PRODUCE_PATH} HTTP/1.1" ') for m in posts), posts
    assert not [m.group(0) for m in access if "?" in m["target"]], "a query string reached the access log"
    assert f'"PUT {PRODUCE_PATH} HTTP/1.1" 405 ' in log
    assert f'"POST {PRODUCE_PATH} HTTP/1.1" 413 ' in log
    assert not [line for line in log.splitlines() if "?" in line and PRODUCE_PATH in line]


@pytest.mark.parametrize("server_overrides", [SMALL_BODY_LIMIT], ids=["max-body-2048"])
def test_every_reply_is_signed_json(server: Server) -> None:
    """Good calls, failures, wrong methods, unknown paths and oversized bodies all answer signed JSON
    with the status the spec names; never a 500, never HTML."""
    order_id = _unique("REP")
    new_body = encode(_new_instance(order_id, f"{order_id}-000001"))
    big = encode({"activity": "queryInstance", "instanceId": "x", "pad": "x" * 4000})

    def produce(body: bytes, key: str = ACCESS_KEY) -> str:
        return f"{PRODUCE_PATH}?{sign(key, body).query}"

    # (label, method, target, body, chunked, expected HTTP status, key expected in Body-Sign)
    cases: list[tuple[str, str, str, bytes | None, bool, int, str]] = [
        ("newInstance", "POST", produce(new_body), new_body, False, 200, ACCESS_KEY),
        ("second key", "POST", produce(new_body, SECOND_ACCESS_KEY), new_body, False, 200, SECOND_ACCESS_KEY),
        ("wrong key", "POST", produce(new_body, WRONG_KEY), new_body, False, 200, ACCESS_KEY),
        ("no query", "POST", PRODUCE_PATH, new_body, False, 200, ACCESS_KEY),
        ("not JSON", "POST", produce(b"not json"), b"not json", False, 200, ACCESS_KEY),
        ("empty body", "POST", produce(b""), b"", False, 200, ACCESS_KEY),
        ("chunked", "POST", produce(new_body), new_body, True, 200, ACCESS_KEY),
        ("GET (KooGallery V1: no timeStamp)", "GET", produce(b""), None, False, 200, ACCESS_KEY),
        ("PUT", "PUT", produce(new_body), new_body, False, 405, ACCESS_KEY),
        ("DELETE", "DELETE", PRODUCE_PATH, None, False, 405, ACCESS_KEY),
        ("OPTIONS", "OPTIONS", PRODUCE_PATH, None, False, 405, ACCESS_KEY),
        ("unknown path", "POST", PRODUCE_PATH + "/nowhere", new_body, False, 404, ACCESS_KEY),
        ("oversized", "POST", produce(big), big, False, 413, ACCESS_KEY),
        ("oversized, chunked", "POST", produce(big), big, True, 413, ACCESS_KEY),
    ]
    problems = []
    for label, method, target, body, chunked, status, key in cases:
        reply = http_request(server.base, method, target, body, chunked=chunked)
        found = []
        if reply.status != status:
            found.append(f"HTTP {reply.status}, expected {status}")
        if reply.content_type != "application/json":
            found.append(f"Content-Type {reply.content_type!r}")
        if not reply.signed_by(key):
            found.append(f"Body-Sign {reply.body_sign!r} is not the body's HMAC with the expected key")
        try:
            envelope = reply.json
        except ValueError:
            found.append(f"body is not JSON: {reply.raw[:80]!r}")
        else:
            if not re.fullmatch(r"\d{6}", str(envelope.get("resultCode"))) or "resultMsg" not in envelope:
                found.append(f"no resultCode/resultMsg: {envelope}")
            elif status == 200 and label == "newInstance" and envelope["resultCode"] != "000000":
                found.append(f"answer {envelope}")
        if found:
            problems.append(f"{label} ({method} {target.split('?')[0]}): {'; '.join(found)}")
    assert not problems, "replies break the envelope contract:\n  " + "\n  ".join(problems)
    assert " 500 " not in server.read_log()
