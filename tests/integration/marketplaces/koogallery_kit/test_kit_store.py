"""Kit sync storage on SQLite and PostgreSQL: every flag of every interface, idempotency, all-org
replacement, a 500-user batch, PII sealed at rest, and the read side (CLI listing, product events)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from isvserver import db
from isvserver.db import database
from isvserver.marketplaces.koogallery_kit import store
from isvserver.marketplaces.koogallery_kit.models import (
    MODELS,
    SEALED_COLUMNS,
    KitApplication,
    KitOrg,
    KitTenant,
    KitUser,
)
from isvserver.marketplaces.koogallery_kit.schemas import REQUESTS
from isvserver.sealing import unseal

from support.harness import DATA_KEY

KEYS = [DATA_KEY]
COMMON = {"instanceId": "inst-1", "tenantId": "tenant-1", "testFlag": 0, "timeStamp": "20220420114117642"}
TENANT = {
    **COMMON,
    "orderId": "CS1",
    "tenantCode": "hw",
    "name": "华为技术有限公司",
    "domainName": "hw.example.com",
}
APP = {**COMMON, "appId": "app-1", "clientId": "client-1", "clientSecret": "ciphertext-not-used-here"}
USER = {
    "userName": "zhangsan",
    "name": "张三丰",
    "orgCode": "dept-1",
    "position": "首席架构师",
    "employeeCode": "EMP-77311",
    "employeeType": 1,
    "role": "admin",
    "enable": "true",
    "mobile": "13912345678",
    "email": "zhangsan@example.com",
    "workPlace": "深圳坂田基地",
}
PII = [
    TENANT["name"],
    *(USER[f] for f in ("name", "position", "employeeCode", "mobile", "email", "workPlace")),
]


@pytest.fixture(autouse=True)
def bound(database_url: str) -> Iterator[str]:
    """The models bound to the test database, no connection left open."""
    bound_db = db.bind(database_url)
    yield database_url
    db.close_all(bound_db)


def run(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn` in one transaction, as the call pipeline runs a handler."""
    with db.connected(), database.atomic():
        return fn(*args)


def load(path: str, body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return REQUESTS[path].load({**body, **changes})


def tenant(flag: int, **changes: Any) -> bool:
    return run(store.sync_tenant, load("tenantSync", TENANT, flag=flag, **changes), KEYS)


def app(flag: int, secret: str | None = "secret-1", **changes: Any) -> bool:  # noqa: S107 - test data
    return run(store.sync_application, load("applicationSync", APP, flag=flag, **changes), secret, KEYS)


def users(flag: int, user_list: list[dict[str, Any]], **changes: Any) -> bool:
    body = {**COMMON, "appId": "app-1", "userList": user_list, "flag": flag, **changes}
    return run(store.sync_users, load("authSync", body), KEYS)


def org(flag: int, code: str = "dept-1", name: str = "研发部", parent: str | None = "root") -> bool:
    body = {**COMMON, "orgCode": code, "orgName": name, "parentCode": parent, "flag": flag}
    return run(store.sync_org, load("singleOrgSync", body))


def all_orgs(orgs: list[dict[str, Any]] | str, **changes: Any) -> bool:
    return run(store.sync_all_orgs, load("allOrgSync", {**COMMON, "orgInfoList": orgs, **changes}))


def rows(model: type) -> list[Any]:
    with db.connected():
        return list(model.select().order_by(model.id))


def one(model: type) -> Any:
    found = rows(model)
    assert len(found) == 1
    return found[0]


# --- tenantSync --------------------------------------------------------------------------------------


def test_tenant_add_repeat_modify_delete_restore() -> None:
    assert tenant(1) is True
    assert tenant(1) is False  # a repeated add creates nothing
    row = one(KitTenant)
    assert (row.instance_id, row.tenant_id, row.order_id, row.tenant_code, row.domain_name) == (
        "inst-1",
        "tenant-1",
        "CS1",
        "hw",
        "hw.example.com",
    )
    assert unseal(KEYS, row.name_sealed) == TENANT["name"] and row.deleted_at is None

    assert tenant(2, name="新名字", domainName="new.example.com") is True
    assert tenant(2, name="新名字", domainName="new.example.com") is False
    row = one(KitTenant)
    assert unseal(KEYS, row.name_sealed) == "新名字" and row.domain_name == "new.example.com"

    assert tenant(0) is True
    assert one(KitTenant).deleted_at is not None
    assert tenant(0) is False  # a delete of something already gone succeeds, changing nothing
    assert tenant(1) is True  # added again: restored, not duplicated
    assert one(KitTenant).deleted_at is None


def test_tenant_delete_of_unknown_and_modify_of_unknown() -> None:
    assert tenant(0, instanceId="never-seen") is False
    assert rows(KitTenant) == []
    assert tenant(2, instanceId="never-seen") is True  # modify of unknown creates it
    assert one(KitTenant).instance_id == "never-seen"


def test_one_tenant_per_instance_records_the_latest_tenant_id() -> None:
    tenant(1)
    assert tenant(1, tenantId="tenant-2") is True
    assert one(KitTenant).tenant_id == "tenant-2"


# --- applicationSync ---------------------------------------------------------------------------------


def test_application_every_flag() -> None:
    assert app(1) is True
    assert app(1) is False
    assert app(2, secret="secret-2") is True  # a new secret is a change
    assert app(2, secret="secret-2") is False
    assert app(2, secret="secret-2", clientId="client-2") is True
    row = one(KitApplication)
    assert row.client_id == "client-2" and unseal(KEYS, row.client_secret_sealed) == "secret-2"
    assert app(0, secret=None) is True
    assert app(0, secret=None) is False
    assert app(0, secret=None, appId="never-seen") is False
    assert app(2, secret="secret-3", appId="app-2") is True  # modify of unknown creates
    assert len(rows(KitApplication)) == 2
    with pytest.raises(ValueError, match="clientSecret"):
        app(1, secret=None)


# --- authSync ----------------------------------------------------------------------------------------


def test_users_add_repeat_modify_revoke_delete() -> None:
    other = {**USER, "userName": "lisi", "name": "李四", "role": "user", "enable": "false"}
    assert users(1, [USER, other]) is True
    assert users(1, [USER, other]) is False
    alice, bob = rows(KitUser)
    assert (alice.user_name, alice.role, alice.enabled, alice.org_code, alice.employee_type) == (
        "zhangsan",
        "admin",
        True,
        "dept-1",
        1,
    )
    assert bob.enabled is False and bob.role == "user"
    assert unseal(KEYS, alice.mobile_sealed) == USER["mobile"]

    assert users(2, [{**USER, "mobile": "13800000000", "enable": "false"}]) is True
    assert users(2, [{**USER, "mobile": "13800000000", "enable": "false"}]) is False
    alice = rows(KitUser)[0]
    assert unseal(KEYS, alice.mobile_sealed) == "13800000000" and alice.enabled is False

    assert users(3, [USER]) is True
    assert users(3, [USER]) is False
    assert rows(KitUser)[0].revoked_at is not None
    assert users(2, [USER]) is True  # a modify keeps the revocation
    assert rows(KitUser)[0].revoked_at is not None
    assert users(1, [USER]) is True  # an add authorises again
    assert rows(KitUser)[0].revoked_at is None

    assert users(0, [USER]) is True
    assert users(0, [USER]) is False
    assert users(3, [USER]) is False  # revoking a deleted user changes nothing
    assert rows(KitUser)[0].deleted_at is not None
    assert len(rows(KitUser)) == 2


def test_users_unknown_delete_revoke_and_modify() -> None:
    ghost = {**USER, "userName": "ghost"}
    assert users(0, [ghost]) is False
    assert users(3, [ghost]) is False
    assert rows(KitUser) == []
    assert users(2, [ghost]) is True  # modify of unknown creates
    assert one(KitUser).user_name == "ghost"


def test_optional_user_fields_may_be_cleared() -> None:
    users(1, [USER])
    minimal = {k: USER[k] for k in ("userName", "name", "orgCode", "role", "enable")}
    assert users(2, [minimal]) is True
    row = one(KitUser)
    assert row.mobile_sealed is None and row.email_sealed is None and row.employee_type is None


def test_a_user_listed_twice_counts_once_and_the_last_entry_wins() -> None:
    assert users(1, [USER, {**USER, "role": "user"}]) is True
    assert one(KitUser).role == "user"


def test_500_users_in_one_transaction() -> None:
    batch = [{**USER, "userName": f"user-{i:03d}", "mobile": f"139{i:08d}"} for i in range(500)]
    assert users(1, batch) is True
    assert len(rows(KitUser)) == 500
    assert users(1, batch) is False
    changed = [*batch[:499], {**batch[499], "orgCode": "dept-2"}]
    assert users(2, changed) is True
    assert users(3, batch) is True
    assert users(0, batch) is True
    assert all(row.deleted_at is not None for row in rows(KitUser))
    assert len(rows(KitUser)) == 500


def test_users_are_kept_per_application_and_instance() -> None:
    users(1, [USER])
    users(1, [USER], appId="app-2")
    users(1, [USER], instanceId="inst-2")
    assert len(rows(KitUser)) == 3


# --- org syncs ---------------------------------------------------------------------------------------


def test_single_org_every_flag() -> None:
    assert org(1) is True
    assert org(1) is False
    assert org(2, name="研发二部") is True
    assert org(2, name="研发二部") is False
    assert org(2, name="研发二部", parent=None) is True
    assert one(KitOrg).parent_code is None
    assert org(0) is True
    assert org(0) is False
    assert org(0, code="never-seen") is False
    assert org(2, code="new-dept") is True  # modify of unknown creates
    assert org(1) is True  # the deleted one restored
    assert [r.deleted_at for r in rows(KitOrg)] == [None, None]


def test_all_orgs_replaces_the_tree() -> None:
    first = [
        {"orgCode": "root", "orgName": "总部"},
        {"orgCode": "rd", "orgName": "研发", "parentCode": "root"},
        {"orgCode": "ops", "orgName": "运维", "parentCode": "root"},
    ]
    assert all_orgs(first) is True
    assert all_orgs(first) is False
    org(1, code="extra", parent="root")

    second = [
        {"orgCode": "root", "orgName": "总部"},
        {"orgCode": "rd", "orgName": "研发中心", "parentCode": "root"},
        {"orgCode": "qa", "orgName": "测试", "parentCode": "rd"},
    ]
    assert all_orgs(second) is True
    state = {r.org_code: (r.org_name, r.parent_code, r.deleted_at is None) for r in rows(KitOrg)}
    assert state == {
        "root": ("总部", None, True),
        "rd": ("研发中心", "root", True),
        "ops": ("运维", "root", False),
        "extra": ("研发部", "root", False),
        "qa": ("测试", "rd", True),
    }
    assert all_orgs(second) is False
    assert all_orgs(first) is True  # ops comes back, qa goes
    alive = {r.org_code for r in rows(KitOrg) if r.deleted_at is None}
    assert alive == {"root", "rd", "ops"}
    assert len(rows(KitOrg)) == 5


def test_all_orgs_as_a_json_string_and_per_instance() -> None:
    assert all_orgs('[{"orgCode":"root","orgName":"总部"}]') is True
    assert all_orgs([{"orgCode": "other", "orgName": "别处"}], instanceId="inst-2") is True
    assert all_orgs("[]") is True  # an empty tree marks every org of the instance deleted
    alive = {(r.instance_id, r.org_code) for r in rows(KitOrg) if r.deleted_at is None}
    assert alive == {("inst-2", "other")}
    assert all_orgs("[]") is False


# --- at rest -----------------------------------------------------------------------------------------


def test_pii_and_client_secret_are_sealed_at_rest() -> None:
    tenant(1)
    app(1, secret="the-client-secret-xyz")
    users(1, [USER])
    with db.connected():
        dump = []
        for model in MODELS:
            cursor = database.execute_sql(f"SELECT * FROM {model._meta.table_name}")  # noqa: S608 - our tables
            dump.extend(repr(value) for row in cursor.fetchall() for value in row)
    text = "\n".join(dump)
    for value in [*PII, "the-client-secret-xyz"]:
        assert value not in text
    sealed = {(model._meta.table_name, column.column_name) for model, column in SEALED_COLUMNS}
    assert ("kit_user", "mobile_sealed") in sealed and ("kit_application", "client_secret_sealed") in sealed
    assert ("kit_sso_state", "code_verifier_sealed") in sealed  # the SSO login's PKCE verifier
    assert len(sealed) == 9


# --- concurrency -------------------------------------------------------------------------------------


def _race(url: str, path: str, body: dict[str, Any], barrier: Any, results: Any) -> None:
    bound_db = db.bind(url)
    data = REQUESTS[path].load(body)
    barrier.wait()
    try:
        with db.connected(), database.atomic():
            if path == "authSync":
                store.sync_users(data, KEYS)
            else:
                store.sync_tenant(data, KEYS)
        results.put("ok")
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(f"{type(exc).__name__}: {exc}")
    finally:
        db.close_all(bound_db)


@pytest.mark.parametrize("path", ["tenantSync", "authSync"])
def test_identical_calls_racing_in_two_processes(bound: str, path: str) -> None:
    body = (
        {**TENANT, "flag": 1}
        if path == "tenantSync"
        else {**COMMON, "appId": "app-1", "userList": [USER], "flag": 1}
    )
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_race, args=(bound, path, body, barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [results.get(timeout=5) for _ in workers] == ["ok", "ok"]
    assert len(rows(KitTenant if path == "tenantSync" else KitUser)) == 1


# --- read side ---------------------------------------------------------------------------------------


def _populate() -> None:
    tenant(1)
    app(1, secret="the-client-secret-xyz")
    users(1, [USER, {**USER, "userName": "lisi", "mobile": None}])
    all_orgs(
        [
            {"orgCode": "root", "orgName": "总部"},
            {"orgCode": "rd", "orgName": "研发", "parentCode": "root"},
            {"orgCode": "qa", "orgName": "测试", "parentCode": "rd"},
            {"orgCode": "lost", "orgName": "孤儿", "parentCode": "nowhere"},
        ]
    )
    org(0, code="qa")


def test_tenants_listing_has_counts_and_no_pii() -> None:
    _populate()
    tenant(1, instanceId="inst-2")
    with db.connected():
        listing = store.tenants(limit=10)
        assert len(store.tenants(limit=1)) == 1
    assert {t["instance_id"] for t in listing} == {"inst-1", "inst-2"}
    first = next(t for t in listing if t["instance_id"] == "inst-1")
    assert (first["applications"], first["users"], first["orgs"]) == (1, 2, 3)
    assert TENANT["name"] not in repr(listing)


def test_tenant_detail_masks_pii_unless_asked() -> None:
    _populate()
    with db.connected():
        masked = store.tenant_detail("inst-1", KEYS)
        clear = store.tenant_detail("inst-1", KEYS, show_pii=True)
        assert store.tenant_detail("nothing-here", KEYS) is None
    text = repr(masked)
    for value in PII:
        assert value not in text
    assert "the-client-secret-xyz" not in text and "the-client-secret-xyz" not in repr(clear)
    assert masked["name"] == "华***"
    zhang = next(u for u in masked["users"] if u["user_name"] == "zhangsan")
    assert zhang["email"] == "z***@example.com" and zhang["mobile"] == "1***"
    assert next(u for u in masked["users"] if u["user_name"] == "lisi")["mobile"] is None
    assert masked["applications"][0]["client_id"] == "client-1"
    assert clear["name"] == TENANT["name"]
    assert next(u for u in clear["users"] if u["user_name"] == "zhangsan")["mobile"] == USER["mobile"]
    tree = {node["org_code"]: [c["org_code"] for c in node["children"]] for node in masked["orgs"]}
    assert tree == {"root": ["rd"], "lost": []}
    root = next(node for node in masked["orgs"] if node["org_code"] == "root")
    assert root["children"][0]["children"] == []  # qa is deleted
    assert [o["org_code"] for o in masked["deleted_orgs"]] == ["qa"]


def test_event_detail_for_the_product() -> None:
    _populate()
    with db.connected():
        tenant_event = store.event_detail("tenant", "inst-1", KEYS)
        app_event = store.event_detail("application", "inst-1", KEYS, app_id="app-1")
        with_secret = store.event_detail("application", "inst-1", KEYS, app_id="app-1", include_secret=True)
        users_event = store.event_detail("users", "inst-1", KEYS, app_id="app-1", user_names=["zhangsan"])
        orgs_event = store.event_detail("orgs", "inst-1", KEYS)
        org_event = store.event_detail("org", "inst-1", KEYS, org_codes=["qa"])
        with pytest.raises(LookupError):
            store.event_detail("tenant", "nothing-here", KEYS)
        with pytest.raises(LookupError):
            store.event_detail("users", "inst-1", KEYS, app_id="app-9")
        with pytest.raises(ValueError, match="unknown Kit event kind"):
            store.event_detail("bogus", "inst-1", KEYS)
    assert tenant_event["name"] == TENANT["name"] and tenant_event["deleted"] is False
    assert app_event["clientId"] == "client-1" and "clientSecret" not in app_event
    assert with_secret["clientSecret"] == "the-client-secret-xyz"
    assert users_event["users"] == [
        {
            "userName": "zhangsan",
            "name": USER["name"],
            "orgCode": "dept-1",
            "position": USER["position"],
            "employeeCode": USER["employeeCode"],
            "employeeType": 1,
            "role": "admin",
            "enabled": True,
            "mobile": USER["mobile"],
            "email": USER["email"],
            "workPlace": USER["workPlace"],
            "revoked": False,
            "deleted": False,
        }
    ]
    assert {o["orgCode"]: o["deleted"] for o in orgs_event["orgs"]} == {
        "root": False,
        "rd": False,
        "qa": True,
        "lost": False,
    }
    assert org_event["orgs"] == [{"orgCode": "qa", "orgName": "测试", "parentCode": "rd", "deleted": True}]


def test_tenants_show_prints_the_org_tree_in_text(bound: str, tmp_path: Path) -> None:
    """`isvserver tenants show` in text: every live organisation, each child indented under its parent
    (before: only the roots; the children were in --json alone)."""
    from click.testing import CliRunner

    from isvserver.marketplaces.koogallery_kit.cli import tenants
    from isvserver.marketplaces.koogallery_kit.client_secret import generate_key_pair

    from support.harness import base_env

    _populate()
    org(1, code="ui", name="界面", parent="rd")
    env = base_env(
        tmp_path, bound, ISV_MARKETPLACES="koogallery,koogallery_kit", ISV_KIT_KEYS="kit-key-1234567890",
        ISV_KIT_PRIVATE_KEY=generate_key_pair()[0].decode("ascii"),
    )  # fmt: skip

    result = CliRunner().invoke(tenants, ["show", "inst-1"], env=env, catch_exceptions=False)

    assert result.exit_code == 0, result.output
    orgs = result.output.split("\norgs:\n")[1].split("\n\n")[0].splitlines()
    assert orgs == [
        "org_code  org_name",
        "lost      孤儿",
        "root      总部",
        "  rd      研发",
        "    ui    界面",
    ]


# --- what a sync reports and stamps ------------------------------------------------------------------


def test_a_change_to_any_listed_user_is_a_change() -> None:
    second = {**USER, "userName": "lisi", "name": "李四光", "mobile": "13800000000"}
    assert users(1, [USER, second]) is True
    assert users(2, [{**USER, "role": "user"}, second]) is True  # only the first of the list changed
    assert users(2, [{**USER, "role": "user"}, second]) is False


def test_a_change_to_any_listed_org_is_a_change() -> None:
    tree = [
        {"orgCode": "root", "orgName": "总部"},
        {"orgCode": "rd", "orgName": "研发", "parentCode": "root"},
    ]
    assert all_orgs(tree) is True
    renamed = [{"orgCode": "root", "orgName": "集团总部"}, tree[1]]  # only the first of the list changed
    assert all_orgs(renamed) is True
    assert all_orgs(renamed) is False


def test_a_new_row_is_created_and_updated_at_once_and_a_change_moves_updated_at() -> None:
    assert tenant(1) is True
    created = one(KitTenant)
    assert created.created_at == created.updated_at
    assert tenant(2, tenantCode="hw-2") is True
    changed = one(KitTenant)
    assert changed.created_at == created.created_at
    assert changed.updated_at > created.updated_at


def test_an_application_without_its_secret_is_refused_before_anything_is_stored() -> None:
    with pytest.raises(
        ValueError, match=r"^an added or modified application needs its decrypted clientSecret$"
    ):
        app(1, secret=None)
    assert rows(KitApplication) == []


def test_all_orgs_marks_every_org_gone_in_chunks() -> None:
    """More orgs gone than one IN (…) list holds (CHUNK = 500): every one of them is marked."""
    big = [{"orgCode": "root", "orgName": "总部"}] + [
        {"orgCode": f"d{i:04d}", "orgName": f"部门{i}", "parentCode": "root"}
        for i in range(2 * store.CHUNK + 1)
    ]
    assert all_orgs(big) is True
    assert all_orgs(big[:1]) is True
    alive = [r.org_code for r in rows(KitOrg) if r.deleted_at is None]
    assert alive == ["root"]
    assert len(rows(KitOrg)) == 2 * store.CHUNK + 2
