"""KooGallery V1, License and V1 Kit through a real `isvserver serve` (gunicorn, 3 workers) on SQLite and
PostgreSQL, signed here from spec §2.3 (not with isvserver's code): every activity, 20 identical
newInstance calls at once, V1 and V2 at once on one URL, and `isvserver simulate v1` / `license`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from support.harness import ACCESS_KEY, base_env
from support.server import (
    PRODUCE_PATH,
    Reply,
    Server,
    db_count,
    db_rows,
    encode,
    http_request,
    post_signed,
    run_cli,
    running_server,
    subprocess_env,
)

pytestmark = pytest.mark.e2e

SIGNING_SEED = base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("=")


@pytest.fixture
def v1_server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    env = subprocess_env(base_env(tmp_path, database_url, ISV_LICENSE_SIGNING_KEY=SIGNING_SEED))
    with running_server(env, tmp_path / "server.log", cwd=tmp_path, workers=3) as running:
        yield running


def v1_get(server: Server, params: dict[str, str], key: str = ACCESS_KEY) -> Reply:
    """A V1 GET signed from the spec's formula: sorted k=v&…, HMAC-SHA256 keyed key+timeStamp, Base64."""
    now = datetime.now(UTC)
    full = {**params, "timeStamp": now.strftime("%Y%m%d%H%M%S") + f"{now.microsecond // 1000:03d}"}
    joined = "&".join(f"{k}={full[k]}" for k in sorted(full))
    digest = hmac.new((key + full["timeStamp"]).encode(), joined.encode(), hashlib.sha256).digest()
    full["authToken"] = base64.b64encode(digest).decode()
    target = PRODUCE_PATH + "?" + "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in full.items())
    return http_request(server.base, "GET", target)


def ok(reply: Reply, code: str = "000000") -> dict[str, Any]:
    assert reply.status == 200, reply.raw
    assert reply.content_type == "application/json"
    assert reply.signed_by(ACCESS_KEY), "V1 reply without a valid Body-Sign"
    assert reply.json["resultCode"] == code, reply.json
    return reply.json


def sha1prng_key(seed: str, size: int) -> bytes:
    """Spec §4's SHA1PRNG written out here."""
    state = bytearray(hashlib.sha1(seed.encode()).digest())  # noqa: S324
    out = b""
    while len(out) < size:
        block = hashlib.sha1(state).digest()  # noqa: S324
        carry, changed = 1, False
        for i, b in enumerate(block):
            total = (state[i] - 256 if state[i] > 127 else state[i]) + (b - 256 if b > 127 else b) + carry
            changed |= state[i] != total & 0xFF
            state[i], carry = total & 0xFF, total >> 8
        if not changed:
            state[0] = (state[0] + 1) & 0xFF
        out += block
    return out[:size]


def decrypt(value: str, size: int = 32) -> str:
    decryptor = Cipher(
        algorithms.AES(sha1prng_key(ACCESS_KEY, size)), modes.CBC(value[:16].encode())
    ).decryptor()
    data = decryptor.update(base64.b64decode(value[16:])) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return (unpadder.update(data) + unpadder.finalize()).decode()


def encrypt(plain: str, iv: str = "Q1w2E3r4T5y6U7i8", size: int = 32) -> str:
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(sha1prng_key(ACCESS_KEY, size)), modes.CBC(iv.encode())).encryptor()
    data = padder.update(plain.encode()) + padder.finalize()
    return iv + base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode()


def purchase(order_id: str, activity: str = "newInstance", **extra: str) -> dict[str, str]:
    return {
        "activity": activity,
        "customerId": "cust-e2e",
        "businessId": str(uuid.uuid4()),
        "orderId": order_id,
        "skuCode": "sku-e2e",
        "productId": "prod-e2e",
        **extra,
    }


def test_every_v1_and_license_activity_through_gunicorn(v1_server: Server) -> None:
    url = v1_server.database_url
    order = f"V1E2E{uuid.uuid4().hex[:8].upper()}"
    new = ok(v1_get(v1_server, purchase(order, mobilePhone=encrypt("13700000000"), email=encrypt("e@x.cn"))))
    iid = new["instanceId"]
    assert new["encryptType"] == "1" and decrypt(new["appInfo"]["userName"]).startswith("admin_")
    assert len(decrypt(new["appInfo"]["password"])) == 20
    assert ok(v1_get(v1_server, purchase(order)))["instanceId"] == iid
    query = ok(v1_get(v1_server, {"activity": "queryInstance", "instanceId": iid}))
    assert decrypt(query["info"][0]["appInfo"]["userName"]) == decrypt(new["appInfo"]["userName"])
    change = {"instanceId": iid, "orderId": order}
    ok(v1_get(v1_server, {"activity": "refreshInstance", **change, "expireTime": "20330101000000"}))
    ok(v1_get(v1_server, {"activity": "expireInstance", **change}))
    ok(
        v1_get(
            v1_server,
            {"activity": "upgrade", **change, "orderId": "UP" + order, "skuCode": "s2", "productId": "p"},
        )
    )
    ok(v1_get(v1_server, {"activity": "releaseInstance", **change}))
    ok(v1_get(v1_server, {"activity": "releaseInstance", **change}))
    ok(v1_get(v1_server, {"activity": "queryInstance", "instanceId": iid}), "000003")
    ok(v1_get(v1_server, purchase(order, mobilePhone="Q1w2E3r4T5y6U7i8AAAAAAAAAAAAAAAAAAAAAA==")), "000002")
    states = db_rows(url, "SELECT state FROM instance WHERE instance_id = ?", (iid,))
    assert states == [("released",)]
    kinds = db_rows(
        url,
        "SELECT e.kind FROM instance_event e JOIN instance i ON e.instance_ref = i.id "
        "WHERE i.instance_id = ? ORDER BY e.id",
        (iid,),
    )
    assert [k for (k,) in kinds] == ["created", "provisioned", "renewed", "frozen", "upgraded", "released"]
    assert db_count(url, "koogallery_v1_buyer") == 1
    log = v1_server.read_log()
    assert "13700000000" not in log and "e@x.cn" not in log and "authToken=" not in log

    lic_order = f"LIC{uuid.uuid4().hex[:8].upper()}"
    got = ok(v1_get(v1_server, purchase(lic_order, "getLicense", expireTime="20300101000000")))
    verified = run_cli("license", "verify", got["license"], env=v1_server.env)
    assert verified.returncode == 0, verified.describe()
    assert json.loads(verified.stdout.splitlines()[0])["iid"] == got["instanceId"]
    lic = {"instanceId": got["instanceId"], "orderId": lic_order}
    ok(
        v1_get(
            v1_server,
            {"activity": "refreshLicense", **lic, "orderId": "R" + lic_order, "expireTime": "20310101000000"},
        )
    )
    ok(v1_get(v1_server, {"activity": "expireLicense", **lic}))
    ok(v1_get(v1_server, {"activity": "releaseLicense", **lic}))
    assert db_rows(url, "SELECT state, version FROM koogallery_license") == [("released", 2)]

    bad = http_request(
        v1_server.base, "GET", f"{PRODUCE_PATH}?activity=queryInstance&timeStamp=1&authToken=x"
    )
    ok(bad, "000002")
    unsigned = http_request(v1_server.base, "PUT", PRODUCE_PATH, b"")
    assert unsigned.status == 405 and unsigned.signed_by(ACCESS_KEY)


def test_twenty_identical_v1_new_instance_calls_at_once_make_one_instance_beside_v2(
    v1_server: Server,
) -> None:
    url = v1_server.database_url
    order = f"V1DUP{uuid.uuid4().hex[:8].upper()}"
    barrier = threading.Barrier(30)

    def v1_call(_: int) -> Reply:
        barrier.wait(timeout=60)
        return v1_get(v1_server, purchase(order))

    def v2_call(n: int) -> Reply:
        body = {
            "activity": "newInstance",
            "orderId": f"V2C{order}{n}",
            "orderLineId": f"L{n}",
            "businessId": str(uuid.uuid4()),
        }
        raw = encode(body)
        barrier.wait(timeout=60)
        return post_signed(v1_server, raw)[0]

    with ThreadPoolExecutor(max_workers=30) as pool:
        v1 = [pool.submit(v1_call, n) for n in range(20)]
        v2 = [pool.submit(v2_call, n) for n in range(10)]
        v1_replies = [f.result() for f in v1]
        v2_replies = [f.result() for f in v2]
    ids = {ok(r)["instanceId"] for r in v1_replies}
    assert len(ids) == 1
    assert all(ok(r)["instanceId"] for r in v2_replies)
    assert db_count(url, "instance", "creation_key LIKE ?", ("v1:%",)) == 1
    assert db_count(url, "instance", "creation_key NOT LIKE ?", ("v1:%",)) == 10
    assert db_count(url, "instance_event", "kind = ?", ("created",)) == 11
    assert db_count(url, "koogallery_v1_buyer") == 1


def test_simulate_v1_and_license_commands(v1_server: Server) -> None:
    env = subprocess_env({"ISV_SIGN_KEY": ACCESS_KEY})
    one = run_cli("simulate", "v1", "newInstance", v1_server.url, env=env)
    assert one.returncode == 0, one.describe()
    assert "Body-Sign valid" in one.output and '"userName": "admin_' in one.output
    assert '"password": "***"' in one.output
    flow = run_cli("simulate", "v1", "flow", v1_server.url, env=env)
    assert flow.returncode == 0 and "v1 flow: all answers right" in flow.output, flow.describe()
    wrong = run_cli(
        "simulate", "v1", "queryInstance", v1_server.url, "instanceId=x", "--key", "wrong-key", env=env
    )
    assert wrong.returncode == 1 and "000001" in wrong.output
    keygen = run_cli("license", "keygen", env=env)
    assert keygen.returncode == 0 and keygen.stdout.startswith("ISV_LICENSE_SIGNING_KEY=")
    forged = run_cli("license", "verify", "ISVL1.e30.AAAA", env=v1_server.env)
    assert forged.returncode == 1 and "invalid" in forged.output


KIT_KEY = "kit-key-v1-e2e-77c1"


def test_v1_kit_syncs_through_gunicorn(tmp_path: Path, database_url: str) -> None:
    from cryptography.hazmat.primitives import serialization

    from isvserver.marketplaces.koogallery_kit.client_secret import encrypt_client_secret, generate_key_pair

    private_pem, public_pem = generate_key_pair()
    env = base_env(
        tmp_path,
        database_url,
        ISV_MARKETPLACES="koogallery,koogallery_kit",
        ISV_KIT_KEYS=KIT_KEY,
        ISV_KIT_PRIVATE_KEY=private_pem.decode("ascii"),
    )
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%d%H%M%S") + f"{now.microsecond // 1000:03d}"
    common = {"instanceId": "kit-v1-e2e", "tenantId": "t1", "testFlag": "0", "timeStamp": stamp}
    users = json.dumps(
        [{"userName": "u1", "name": "用户", "orgCode": "d1", "role": "user", "enable": "true"}]
    )
    secret = encrypt_client_secret(serialization.load_pem_public_key(public_pem), "s3cret")
    calls = [
        (
            "tenantSync",
            {**common, "orderId": "O1", "tenantCode": "c", "name": "公司", "domainName": "d.cn", "flag": "1"},
        ),
        ("applicationSync", {**common, "appId": "a1", "clientId": "c1", "clientSecret": secret, "flag": "1"}),
        ("authSync", {**common, "appId": "a1", "userList": users, "flag": "1"}),
        ("singleOrgSync", {**common, "orgCode": "d1", "orgName": "一部", "flag": "1"}),
        ("allOrgSync", {**common, "orgInfoList": json.dumps([{"orgCode": "d1", "orgName": "一部"}])}),
    ]
    with running_server(subprocess_env(env), tmp_path / "server.log", cwd=tmp_path, workers=3) as server:
        for activity, body in calls:
            text = {
                k: v if isinstance(v, str) else json.dumps(v, separators=(",", ":")) for k, v in body.items()
            }
            joined = "&".join(f"{k}={text[k]}" for k in sorted(text))
            digest = hmac.new((KIT_KEY + stamp).encode(), joined.encode(), hashlib.sha256).digest()
            raw = json.dumps(body, ensure_ascii=False).encode()
            headers = {"authToken": base64.b64encode(digest).decode()}
            reply = http_request(server.base, "POST", f"{PRODUCE_PATH}/produceAPI/{activity}", raw, headers)
            assert reply.status == 200 and reply.signed_by(KIT_KEY), reply.raw
            assert reply.json["resultCode"] == "000000", (activity, reply.json)
            again = http_request(server.base, "POST", f"{PRODUCE_PATH}/produceAPI/{activity}", raw, headers)
            assert again.json["resultCode"] == "000001" and again.signed_by(KIT_KEY)  # the token, replayed
        url = server.database_url
        assert (
            db_count(url, "kit_tenant") == db_count(url, "kit_application") == db_count(url, "kit_user") == 1
        )
        assert db_count(url, "kit_org") == 1
        assert db_count(url, "callback_log", "interface = ?", ("koogallery.kit.v1",)) == 10
        assert "s3cret" not in server.read_log() and "用户" not in server.read_log()
