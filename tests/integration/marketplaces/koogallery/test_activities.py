"""Every V2 basic activity through the HTTP surface (spec §5, §6), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from flask import Flask

from isvserver import create_app, db, lifecycle
from isvserver.marketplaces.koogallery.marketplace import encode_body, signed_query
from isvserver.marketplaces.koogallery.models import OrderNotification
from isvserver.models import CallLog, Instance, InstanceEvent
from isvserver.provisioning import AppInfo, InstanceView, LifecycleEvent
from isvserver.provisioning.template import TemplateProvisioner
from isvserver.sealing import unseal
from isvserver.settings import Settings

from support.harness import (
    ACCESS_KEY,
    ADMIN_TEMPLATE,
    FRONTEND_TEMPLATE,
    NOTIFY_KEY,
    FixedClock,
    Marketplace,
    instance_events,
    instance_row,
)

OK, AUTH, INVALID, NOT_FOUND = "000000", "000001", "000002", "000003"
ID64 = "I" * 60 + "-064"  # a usable instance id of exactly 64 characters


# --- helpers ---------------------------------------------------------------------------------------


row = instance_row


def event_kinds(instance_id: str) -> list[str]:
    return [event.kind for event in instance_events(instance_id)]


events = instance_events


def business_rows() -> tuple[list[dict[str, Any]], ...]:
    """Every row a business call may write (instances, events, order notifications)."""
    with db.connected():
        return tuple(
            list(model.select().order_by(model.id).dicts())
            for model in (Instance, InstanceEvent, OrderNotification)
        )


def call_logs(**conditions: Any) -> list[CallLog]:
    with db.connected():
        query = CallLog.select().order_by(CallLog.id)
        for name, value in conditions.items():
            query = query.where(getattr(CallLog, name) == value)
        return list(query)


def created(marketplace: Marketplace, order_id: str = "CS001", business_id: str = "biz-1") -> str:
    """A new active instance of order line `<order_id>-000001`; its instanceId."""
    answer = marketplace.new_instance(order_id, business_id=business_id)
    assert answer.code == OK, answer.json
    return answer.json["instanceId"]


def refresh(instance_id: str, line: str = "CS-R-000001", **fields: str) -> dict[str, str]:
    return {
        "activity": "refreshInstance",
        "instanceId": instance_id,
        "orderId": line.rsplit("-", 1)[0],
        "orderLineId": line,
        "scene": "RENEWAL",
        "expireTime": "20301231235959",
        **fields,
    }


def status(instance_id: str, value: str, **fields: str) -> dict[str, str]:
    return {"activity": "updateInstanceStatus", "instanceId": instance_id, "status": value, **fields}


def release(instance_id: str, **fields: str) -> dict[str, str]:
    return {"activity": "releaseInstance", "instanceId": instance_id, **fields}


def upgrade(instance_id: str, line: str = "CS-U-000001", **fields: str) -> dict[str, str]:
    return {
        "activity": "upgradeInstance",
        "instanceId": instance_id,
        "orderId": line.rsplit("-", 1)[0],
        "orderLineId": line,
        **fields,
    }


def check(instance_id: str, product_info: Any, **fields: str) -> dict[str, Any]:
    return {
        "activity": "changeInstanceCheck",
        "instanceId": instance_id,
        "productInfo": product_info,
        **fields,
    }


def notify(order_id: str, line: str, **fields: str) -> dict[str, str]:
    return {"activity": "orderNotify", "orderId": order_id, "orderLineId": line, **fields}


@contextmanager
def captured_sql() -> Iterator[list[str]]:
    """The SQL statements peewee runs inside the block."""
    statements: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if isinstance(record.msg, tuple) and record.msg and isinstance(record.msg[0], str):
                statements.append(record.msg[0])

    logger = logging.getLogger("peewee")
    handler = Collect(logging.DEBUG)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield statements
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def on_instance_table(statements: list[str]) -> list[str]:
    """The statements that name the instance table (not instance_event)."""
    return [s for s in statements if re.search(r'"instance"(?!_)', s)]


class Recording:
    """A provisioner wrapping the template one; check_change answers `reason` and remembers its calls."""

    def __init__(self, reason: str | None = None) -> None:
        self.template = TemplateProvisioner(FRONTEND_TEMPLATE, ADMIN_TEMPLATE)
        self.reason = reason
        self.checked: list[tuple[str, dict[str, Any]]] = []

    inline = True

    def provision(self, event: LifecycleEvent) -> AppInfo:
        return self.template.provision(event)

    def apply(self, event: LifecycleEvent) -> None:
        """Nothing to carry out."""

    def check_change(self, instance: InstanceView, product_info: dict[str, Any]) -> str | None:
        self.checked.append((instance.instance_id, product_info))
        return self.reason


@pytest.fixture
def marketplace_with(settings: Settings, clock: FixedClock) -> Iterator[Callable[[Any], Marketplace]]:
    """Build the app with a given provisioner and talk to it."""
    databases = []

    def build(provisioner: Any) -> Marketplace:
        application: Flask = create_app(settings, provisioner=provisioner, clock=clock)
        application.config["TESTING"] = True
        databases.append(db.database.obj)
        return Marketplace(application.test_client(), settings.of("koogallery").produce_path)

    yield build
    for database in databases:
        db.close_all(database)


# --- newInstance -----------------------------------------------------------------------------------


def test_new_instance_provisions_and_stores_app_info(marketplace: Marketplace, settings: Settings) -> None:
    answer = marketplace.new_instance("CS100", business_id="87b94795-0603-4e24-8ae5-69420d60e3c8")

    assert answer.status == 200
    assert answer.code == OK
    instance_id = answer.json["instanceId"]
    assert instance_id == "87b94795-0603-4e24-8ae5-69420d60e3c8"
    instance = row(instance_id)
    assert instance.state == "active"
    assert (instance.marketplace, instance.order_id, instance.order_line_id) == (
        "koogallery",
        "CS100",
        "CS100-000001",
    )
    assert instance.business_id == instance_id
    assert instance.released_at is None
    assert event_kinds(instance_id) == ["created", "provisioned"]
    assert events(instance_id)[-1].to_state == "active"

    info = marketplace.query(instance_id)
    assert info.code == OK
    [entry] = info.json["info"]
    assert entry["instanceId"] == instance_id
    app_info = entry["appInfo"]
    assert app_info["frontEndUrl"] == FRONTEND_TEMPLATE.format(instance_id=instance_id)
    assert app_info["adminUrl"] == ADMIN_TEMPLATE.format(instance_id=instance_id)
    assert re.fullmatch(r"admin_[a-z0-9]{8}", app_info["userName"])
    assert instance.user_name == app_info["userName"]
    password = app_info["password"]
    assert len(password) == 20
    assert instance.password_encrypted
    assert password not in instance.password_encrypted
    assert unseal(settings.data_key, instance.password_encrypted) == password


@pytest.mark.parametrize(
    "business_id",
    ["biz,1", "biz 1", "biz/1", "biz?1", "业务-1", "biz:1"],
    ids=["comma", "space", "slash", "question", "non-ascii", "colon"],
)
def test_unusable_business_id_gets_a_uuid(marketplace: Marketplace, business_id: str) -> None:
    answer = marketplace.new_instance("CS200", business_id=business_id)

    assert answer.code == OK
    instance_id = answer.json["instanceId"]
    assert str(uuid.UUID(instance_id)) == instance_id
    assert row(instance_id).business_id == business_id


def test_business_id_already_an_instance_id_gets_a_uuid(marketplace: Marketplace) -> None:
    first = created(marketplace, "CS300", business_id="shared-id")

    second = marketplace.new_instance("CS301", business_id="shared-id")

    assert first == "shared-id"
    assert second.code == OK
    assert second.json["instanceId"] != "shared-id"
    assert str(uuid.UUID(second.json["instanceId"])) == second.json["instanceId"]
    assert row(second.json["instanceId"]).order_id == "CS301"
    assert row("shared-id").order_id == "CS300"


def test_resend_returns_the_same_instance_and_creates_nothing(marketplace: Marketplace) -> None:
    first = marketplace.new_instance("CS400", business_id="first-business-id")
    before = business_rows()

    again = marketplace.new_instance("CS400", business_id="second-business-id")
    third = marketplace.new_instance("CS400", business_id="third-business-id")

    assert first.code == again.code == third.code == OK
    assert again.json["instanceId"] == third.json["instanceId"] == first.json["instanceId"]
    assert first.json["instanceId"] == "first-business-id"
    assert business_rows() == before
    with db.connected():
        assert Instance.select().where(Instance.order_id == "CS400").count() == 1


def test_other_order_lines_get_other_instances(marketplace: Marketplace) -> None:
    one = marketplace.new_instance("CS500", line="CS500-000001", business_id="b-1")
    two = marketplace.new_instance("CS500", line="CS500-000002", business_id="b-2")

    assert one.code == two.code == OK
    assert one.json["instanceId"] != two.json["instanceId"]
    with db.connected():
        assert Instance.select().where(Instance.order_id == "CS500").count() == 2


# --- queryInstance ---------------------------------------------------------------------------------


def test_query_one_instance_is_one_select(marketplace: Marketplace) -> None:
    instance_id = created(marketplace)

    with captured_sql() as statements:
        answer = marketplace.query(instance_id)

    assert answer.code == OK
    assert [i["instanceId"] for i in answer.json["info"]] == [instance_id]
    touching = on_instance_table(statements)
    assert len(touching) == 1, touching
    assert touching[0].lstrip().upper().startswith("SELECT")


def test_query_hundred_instances_is_one_select(marketplace: Marketplace, settings: Settings) -> None:
    provisioner = TemplateProvisioner(FRONTEND_TEMPLATE, ADMIN_TEMPLATE)
    with db.connected():
        ids = [
            lifecycle.create_instance(
                "koogallery",
                f"order:{n}",
                f"q-{n:03}",
                provisioner,
                settings.data_key,
                reference=(f"CS{n:03}", f"CS{n:03}-1"),
            )[0].instance_id
            for n in range(100)
        ]
    requested = list(reversed(ids))

    with captured_sql() as statements:
        answer = marketplace.query(*requested)

    assert answer.code == OK
    assert [i["instanceId"] for i in answer.json["info"]] == requested
    assert all(i["appInfo"]["frontEndUrl"].endswith(i["instanceId"]) for i in answer.json["info"])
    touching = on_instance_table(statements)
    assert len(touching) == 1, touching
    assert touching[0].lstrip().upper().startswith("SELECT")


def test_query_more_than_hundred_ids_is_invalid(marketplace: Marketplace) -> None:
    instance_id = created(marketplace)
    ids = [instance_id] + [f"unknown-{n}" for n in range(100)]

    answer = marketplace.query(*ids)

    assert answer.code == INVALID
    assert "info" not in answer.json


@pytest.mark.parametrize("value", ["", " ", ",", " , ,, "], ids=["empty", "space", "comma", "blanks"])
def test_query_blank_list_is_invalid(marketplace: Marketplace, value: str) -> None:
    created(marketplace)

    answer = marketplace.send({"activity": "queryInstance", "instanceId": value})

    assert answer.code == INVALID


@pytest.mark.parametrize("value", ["missing", None, 5, ["biz-1"], {"id": "biz-1"}], ids=repr)
def test_query_instance_id_must_be_a_string(marketplace: Marketplace, value: Any) -> None:
    created(marketplace, business_id="biz-1")
    body: dict[str, Any] = {"activity": "queryInstance"}
    if value != "missing":
        body["instanceId"] = value

    answer = marketplace.send(body)

    assert answer.code == INVALID
    assert "info" not in answer.json


def test_query_id_longer_than_64_is_invalid_and_64_is_accepted(marketplace: Marketplace) -> None:
    instance_id = created(marketplace, business_id=ID64)

    too_long = marketplace.query(instance_id, "x" * 65)
    at_limit = marketplace.query(instance_id)

    assert len(instance_id) == 64
    assert too_long.code == INVALID
    assert at_limit.code == OK
    assert [i["instanceId"] for i in at_limit.json["info"]] == [instance_id]


def test_query_tolerates_duplicates_and_spaces(marketplace: Marketplace) -> None:
    a = created(marketplace, "CS601", business_id="inst-a")
    b = created(marketplace, "CS602", business_id="inst-b")

    answer = marketplace.send({"activity": "queryInstance", "instanceId": f" {a} ,{b},{a},, {b} "})

    assert answer.code == OK
    assert [i["instanceId"] for i in answer.json["info"]] == [a, b]


def test_query_omits_unknown_ids(marketplace: Marketplace) -> None:
    a = created(marketplace, "CS701", business_id="known-a")

    answer = marketplace.query("never-created-1", a, "never-created-2")

    assert answer.code == OK
    assert [i["instanceId"] for i in answer.json["info"]] == [a]


def test_query_all_unknown_is_not_found(marketplace: Marketplace) -> None:
    created(marketplace)

    answer = marketplace.query("never-created-1", "never-created-2")

    assert answer.code == NOT_FOUND
    assert "info" not in answer.json


def test_query_released_instance_counts_as_unknown(marketplace: Marketplace) -> None:
    gone = created(marketplace, "CS801", business_id="gone")
    kept = created(marketplace, "CS802", business_id="kept")
    assert marketplace.send(release(gone)).code == OK

    alone = marketplace.query(gone)
    mixed = marketplace.query(gone, kept)

    assert alone.code == NOT_FOUND
    assert mixed.code == OK
    assert [i["instanceId"] for i in mixed.json["info"]] == [kept]


# --- refreshInstance -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scene", "kind"),
    [
        ("TRIAL_TO_FORMAL", "trial_converted"),
        ("RENEWAL", "renewed"),
        ("UNSUBSCRIBE_RENEWAL_PERIOD", "renewal_unsubscribed"),
        ("RENEWAL_CHANGE", "renewal_changed"),
    ],
)
def test_refresh_scene_stores_expiry_and_records_event(
    marketplace: Marketplace, scene: str, kind: str
) -> None:
    instance_id = created(marketplace)
    with db.connected():
        Instance.update(is_trial=True).where(Instance.instance_id == instance_id).execute()

    answer = marketplace.send(
        refresh(instance_id, "CS-R1-000001", scene=scene, expireTime="20301231235959", productId="OFFI46")
    )

    assert answer.code == OK
    instance = row(instance_id)
    assert instance.state == "active"
    assert instance.expire_at == datetime(2030, 12, 31, 23, 59, 59)
    assert instance.product_id == "OFFI46"
    assert instance.is_trial is (scene != "TRIAL_TO_FORMAL")
    last = events(instance_id)[-1]
    assert (last.kind, last.order_id, last.order_line_id) == (kind, "CS-R1", "CS-R1-000001")
    assert len(events(instance_id)) == 3


def test_refresh_accepts_seventeen_digit_expire_time(marketplace: Marketplace) -> None:
    instance_id = created(marketplace)

    answer = marketplace.send(refresh(instance_id, expireTime="20221124023618256"))

    assert answer.code == OK
    assert row(instance_id).expire_at == datetime(2022, 11, 24, 2, 36, 18, 256000)


@pytest.mark.parametrize(
    "expire_time",
    [
        "20231345000000",
        "20230229120000",
        "20231231246000",
        "20231345000000000",
        "2023123123595",
        "202312312359591",
        "202312312359591234",
        "2023-12-31T23:59",
        "２０２３１２３１２３５９５９",
        "",
    ],
    ids=[
        "month13",
        "feb29-non-leap",
        "hour24",
        "month13-17digits",
        "13digits",
        "15digits",
        "18digits",
        "iso",
        "fullwidth",
        "empty",
    ],
)
def test_refresh_rejects_invalid_expire_time(marketplace: Marketplace, expire_time: str) -> None:
    instance_id = created(marketplace)
    before = business_rows()

    answer = marketplace.send(refresh(instance_id, expireTime=expire_time))

    assert answer.code == INVALID
    assert business_rows() == before


def test_refresh_unknown_instance_is_not_found(marketplace: Marketplace) -> None:
    created(marketplace)
    before = business_rows()

    answer = marketplace.send(refresh("never-created"))

    assert answer.code == NOT_FOUND
    assert business_rows() == before


def test_refresh_is_idempotent_per_order_line(marketplace: Marketplace) -> None:
    instance_id = created(marketplace)

    first = marketplace.send(refresh(instance_id, "CS-R2-000001", expireTime="20300101000000"))
    again = marketplace.send(refresh(instance_id, "CS-R2-000001", expireTime="20300101000000"))
    late = marketplace.send(refresh(instance_id, "CS-R2-000001", expireTime="20990101000000"))
    other_line = marketplace.send(refresh(instance_id, "CS-R2-000002", expireTime="20310101000000"))

    assert first.code == again.code == late.code == other_line.code == OK
    assert event_kinds(instance_id) == ["created", "provisioned", "renewed", "renewed"]
    assert [e.order_line_id for e in events(instance_id)[2:]] == ["CS-R2-000001", "CS-R2-000002"]
    assert row(instance_id).expire_at == datetime(2031, 1, 1)


def test_refresh_order_lines_with_colons_are_not_confused(marketplace: Marketplace) -> None:
    """(orderId "CS:1", line "2") and (orderId "CS", line "1:2") are two different order lines."""
    instance_id = created(marketplace)
    first = {**refresh(instance_id, expireTime="20300101000000"), "orderId": "CS:1", "orderLineId": "2"}
    second = {**refresh(instance_id, expireTime="20310101000000"), "orderId": "CS", "orderLineId": "1:2"}

    assert marketplace.send(first).code == OK
    assert marketplace.send(second).code == OK

    assert event_kinds(instance_id) == ["created", "provisioned", "renewed", "renewed"]
    assert row(instance_id).expire_at == datetime(2031, 1, 1)


def test_retry_of_an_applied_refresh_or_upgrade_succeeds_after_release(marketplace: Marketplace) -> None:
    """A retry of a change that already took effect is a success, even once the instance is released."""
    instance_id = created(marketplace)
    assert marketplace.send(refresh(instance_id, "CS-R3-000001")).code == OK
    assert marketplace.send(upgrade(instance_id, "CS-U3-000001")).code == OK
    assert marketplace.send(release(instance_id)).code == OK

    assert marketplace.send(refresh(instance_id, "CS-R3-000001")).code == OK
    assert marketplace.send(upgrade(instance_id, "CS-U3-000001")).code == OK
    assert marketplace.send(refresh(instance_id, "CS-R3-000002")).code == NOT_FOUND
    assert marketplace.send(upgrade(instance_id, "CS-U3-000002")).code == NOT_FOUND
    assert event_kinds(instance_id) == ["created", "provisioned", "renewed", "upgraded", "released"]


def test_top_level_null_means_absent(marketplace: Marketplace) -> None:
    """Huawei's signer drops top-level nulls, so a null optional field is as if not sent."""
    instance_id = created(marketplace)

    answer = marketplace.send(refresh(instance_id, productId=None))  # type: ignore[arg-type]
    missing = marketplace.send({**refresh(instance_id, "CS-R4-000001"), "orderId": None})

    assert answer.code == OK
    assert row(instance_id).product_id is None
    assert missing.code == INVALID
    assert "orderId" in missing.json["resultMsg"]


def test_release_with_order_id_alone_records_it(marketplace: Marketplace) -> None:
    instance_id = created(marketplace)

    assert marketplace.send(release(instance_id, orderId="CS-Y")).code == OK

    last = events(instance_id)[-1]
    assert (last.kind, last.order_id, last.order_line_id) == ("released", "CS-Y", None)


# --- updateInstanceStatus --------------------------------------------------------------------------


def test_freeze_and_unfreeze_with_repeats(marketplace: Marketplace) -> None:
    instance_id = created(marketplace)

    freeze = marketplace.send(status(instance_id, "FREEZE"))
    assert (freeze.code, row(instance_id).state) == (OK, "frozen")
    freeze_again = marketplace.send(status(instance_id, "FREEZE"))
    assert (freeze_again.code, row(instance_id).state) == (OK, "frozen")
    assert event_kinds(instance_id) == ["created", "provisioned", "frozen"]

    unfreeze = marketplace.send(status(instance_id, "UNFREEZE"))
    assert (unfreeze.code, row(instance_id).state) == (OK, "active")
    unfreeze_again = marketplace.send(status(instance_id, "UNFREEZE"))
    assert (unfreeze_again.code, row(instance_id).state) == (OK, "active")
    assert event_kinds(instance_id) == ["created", "provisioned", "frozen", "unfrozen"]

    # a frozen tenant keeps its data: the buyer still gets the same appInfo afterwards
    assert marketplace.query(instance_id).code == OK


@pytest.mark.parametrize("value", ["FREEZE", "UNFREEZE"])
def test_status_of_unknown_instance_is_not_found(marketplace: Marketplace, value: str) -> None:
    created(marketplace)
    before = business_rows()

    answer = marketplace.send(status("never-created", value))

    assert answer.code == NOT_FOUND
    assert business_rows() == before


@pytest.mark.parametrize("value", ["PAUSE", "freeze", "", "FREEZE "])
def test_status_value_outside_the_list_is_invalid(marketplace: Marketplace, value: str) -> None:
    instance_id = created(marketplace)
    before = business_rows()

    answer = marketplace.send(status(instance_id, value))

    assert answer.code == INVALID
    assert business_rows() == before


# --- releaseInstance -------------------------------------------------------------------------------


def test_release_keeps_the_row_and_repeats_succeed(marketplace: Marketplace) -> None:
    instance_id = created(marketplace)

    first = marketplace.send(release(instance_id, orderId="CS-X", orderLineId="CS-X-000001"))
    again = marketplace.send(release(instance_id, orderId="CS-X", orderLineId="CS-X-000001"))
    bare = marketplace.send(release(instance_id))

    assert first.code == again.code == bare.code == OK
    instance = row(instance_id)
    assert instance.state == "released"
    assert instance.released_at is not None
    assert instance.released_at >= instance.created_at
    assert instance.front_end_url is not None  # kept, never deleted
    last = events(instance_id)[-1]
    assert (last.kind, last.to_state, last.order_id, last.order_line_id) == (
        "released",
        "released",
        "CS-X",
        "CS-X-000001",
    )
    assert event_kinds(instance_id) == ["created", "provisioned", "released"]
    with db.connected():
        assert Instance.select().count() == 1


def test_release_of_unknown_instance_is_not_found(marketplace: Marketplace) -> None:
    created(marketplace)
    before = business_rows()

    answer = marketplace.send(release("never-created"))

    assert answer.code == NOT_FOUND
    assert business_rows() == before


# --- upgradeInstance -------------------------------------------------------------------------------


def test_upgrade_is_idempotent_per_order_line(marketplace: Marketplace) -> None:
    instance_id = created(marketplace)

    first = marketplace.send(upgrade(instance_id, "CS-U1-000001"))
    again = marketplace.send(upgrade(instance_id, "CS-U1-000001"))
    other = marketplace.send(upgrade(instance_id, "CS-U2-000001"))

    assert first.code == again.code == other.code == OK
    assert event_kinds(instance_id) == ["created", "provisioned", "upgraded", "upgraded"]
    assert [(e.order_id, e.order_line_id) for e in events(instance_id)[2:]] == [
        ("CS-U1", "CS-U1-000001"),
        ("CS-U2", "CS-U2-000001"),
    ]
    assert row(instance_id).state == "active"


def test_upgrade_of_unknown_instance_is_not_found(marketplace: Marketplace) -> None:
    created(marketplace)
    before = business_rows()

    answer = marketplace.send(upgrade("never-created"))

    assert answer.code == NOT_FOUND
    assert business_rows() == before


# --- changeInstanceCheck ---------------------------------------------------------------------------

PRODUCT_INFO = {"skuCode": "sku-2", "productId": "OFFI46", "linearValue": 10}


@pytest.mark.parametrize("form", ["object", "json-string"])
def test_change_check_accepts_object_or_json_string(
    marketplace_with: Callable[[Any], Marketplace], form: str
) -> None:
    provisioner = Recording()
    market = marketplace_with(provisioner)
    instance_id = created(market)
    before = business_rows()

    product_info = PRODUCT_INFO if form == "object" else json.dumps(PRODUCT_INFO)
    answer = market.send(check(instance_id, product_info))

    assert answer.code == OK
    assert provisioner.checked == [(instance_id, PRODUCT_INFO)]
    assert business_rows() == before


@pytest.mark.parametrize(
    "product_info",
    ["not json", "[1, 2]", '"text"', "null", "", 5, ["a"], True, None],
    ids=["text", "json-array", "json-string", "json-null", "empty", "int", "list", "bool", "null"],
)
def test_change_check_needs_an_object(
    marketplace_with: Callable[[Any], Marketplace], product_info: Any
) -> None:
    provisioner = Recording()
    market = marketplace_with(provisioner)
    instance_id = created(market)

    answer = market.send(check(instance_id, product_info))

    assert answer.code == INVALID
    assert provisioner.checked == []


def test_change_check_of_unknown_instance_is_not_found(marketplace: Marketplace) -> None:
    created(marketplace)

    answer = marketplace.send(check("never-created", PRODUCT_INFO))

    assert answer.code == NOT_FOUND


def test_change_check_rejected_by_the_product(marketplace_with: Callable[[Any], Marketplace]) -> None:
    reason = "sku-2 allows at most 5 users; the tenant has 12"
    provisioner = Recording(reason=reason)
    market = marketplace_with(provisioner)
    instance_id = created(market)

    answer = market.send(check(instance_id, PRODUCT_INFO))

    assert answer.code != OK
    assert answer.code in ("000002", "000005", "000104")
    assert reason in answer.json["resultMsg"]
    assert provisioner.checked == [(instance_id, PRODUCT_INFO)]


def test_change_check_long_rejection_reason_fits_result_msg(
    marketplace_with: Callable[[Any], Marketplace],
) -> None:
    market = marketplace_with(Recording(reason="capacity " * 60))
    instance_id = created(market)

    answer = market.send(check(instance_id, PRODUCT_INFO))

    assert answer.code != OK
    assert "capacity capacity" in answer.json["resultMsg"]
    assert len(answer.json["resultMsg"]) <= 255


# --- orderNotify -----------------------------------------------------------------------------------


def test_order_notify_stores_one_row_per_line_and_counts(marketplace: Marketplace) -> None:
    answers = [
        marketplace.send(notify("CS900", "CS900-000001"), key=NOTIFY_KEY),
        marketplace.send(notify("CS900", "CS900-000001"), key=NOTIFY_KEY),
        marketplace.send(notify("CS900", "CS900-000002"), key=NOTIFY_KEY),
        marketplace.send(notify("CS900", "CS900-000001"), key=NOTIFY_KEY),
    ]

    assert [a.code for a in answers] == [OK] * 4
    with db.connected():
        rows = list(OrderNotification.select().order_by(OrderNotification.order_line_id))
    assert [(r.marketplace, r.order_id, r.order_line_id, r.times_received) for r in rows] == [
        ("koogallery", "CS900", "CS900-000001", 3),
        ("koogallery", "CS900", "CS900-000002", 1),
    ]
    assert rows[0].first_received_at <= rows[0].last_received_at
    with db.connected():
        assert Instance.select().count() == 0


def test_order_notify_needs_the_notify_key(marketplace: Marketplace) -> None:
    answer = marketplace.send(notify("CS901", "CS901-000001"), reply_key=NOTIFY_KEY)

    assert answer.code == AUTH
    with db.connected():
        assert OrderNotification.select().count() == 0


def test_basic_activity_is_not_accepted_with_the_notify_key(marketplace: Marketplace) -> None:
    answer = marketplace.send(
        {"activity": "newInstance", "orderId": "CS902", "orderLineId": "CS902-1", "businessId": "b"},
        key=NOTIFY_KEY,
        reply_key=ACCESS_KEY,
    )

    assert answer.code == AUTH
    with db.connected():
        assert Instance.select().count() == 0


# --- validation ------------------------------------------------------------------------------------

NON_STRINGS = [123, None, ["x"], {"x": "y"}, True]


def valid_bodies(instance_id: str) -> dict[str, dict[str, Any]]:
    """One valid body per activity, every length-limited field exactly at its limit."""
    return {
        "newInstance": {
            "activity": "newInstance",
            "orderId": "N" * 64,
            "orderLineId": "L" * 64,
            "businessId": "B" * 64,
        },
        "refreshInstance": {
            "activity": "refreshInstance",
            "instanceId": instance_id,
            "orderId": "R" * 64,
            "orderLineId": "L" * 64,
            "scene": "RENEWAL",
            "expireTime": "20301231235959999",
            "productId": "P" * 64,
        },
        "updateInstanceStatus": {
            "activity": "updateInstanceStatus",
            "instanceId": instance_id,
            "status": "FREEZE",
        },
        "releaseInstance": {
            "activity": "releaseInstance",
            "instanceId": instance_id,
            "orderId": "O" * 64,
            "orderLineId": "L" * 64,
        },
        "upgradeInstance": {
            "activity": "upgradeInstance",
            "instanceId": instance_id,
            "orderId": "U" * 64,
            "orderLineId": "V" * 64,
        },
        "changeInstanceCheck": {
            "activity": "changeInstanceCheck",
            "instanceId": instance_id,
            "productInfo": PRODUCT_INFO,
        },
        "orderNotify": {"activity": "orderNotify", "orderId": "N" * 64, "orderLineId": "M" * 64},
    }


# (field, maximum length or None for an enumerated/structured field, mandatory)
FIELDS: dict[str, list[tuple[str, int | None, bool]]] = {
    "newInstance": [("orderId", 64, True), ("orderLineId", 64, True), ("businessId", 64, True)],
    "refreshInstance": [
        ("instanceId", 64, True),
        ("orderId", 64, True),
        ("orderLineId", 64, True),
        ("scene", None, True),
        ("expireTime", 17, True),
        ("productId", 64, False),
    ],
    "updateInstanceStatus": [("instanceId", 64, True), ("status", None, True)],
    "releaseInstance": [("instanceId", 64, True), ("orderId", 64, False), ("orderLineId", 64, False)],
    "upgradeInstance": [("instanceId", 64, True), ("orderId", 64, True), ("orderLineId", 64, True)],
    "changeInstanceCheck": [("instanceId", 64, True)],
    "orderNotify": [("orderId", 64, True), ("orderLineId", 64, True)],
}


def invalid_variants(body: dict[str, Any], fields: list[tuple[str, int | None, bool]]) -> Iterator[tuple]:
    for name, limit, mandatory in fields:
        if mandatory:
            yield f"{name} missing", {k: v for k, v in body.items() if k != name}
            yield f"{name} empty", {**body, name: ""}
        if limit is not None:
            value = body[name]
            yield f"{name} one too long", {**body, name: value + value[-1]}
        for other in NON_STRINGS:
            if other is None and not mandatory:
                continue  # an optional null: see the note in the report
            yield f"{name} = {other!r}", {**body, name: other}


@pytest.mark.parametrize("activity", list(FIELDS))
def test_invalid_fields_are_rejected_and_write_nothing(marketplace: Marketplace, activity: str) -> None:
    instance_id = created(marketplace, "CS-V", business_id=ID64)
    body = valid_bodies(instance_id)[activity]
    key = NOTIFY_KEY if activity == "orderNotify" else ACCESS_KEY
    before = business_rows()

    for label, variant in invalid_variants(body, FIELDS[activity]):
        answer = marketplace.send(variant, key=key)
        assert answer.code == INVALID, label
        assert business_rows() == before, label

    accepted = marketplace.send(body, key=key)
    assert accepted.code == OK, accepted.json
    if activity == "changeInstanceCheck":
        assert business_rows() == before
    else:
        assert business_rows() != before


def test_fields_at_their_limits_are_stored(marketplace: Marketplace) -> None:
    instance_id = created(marketplace, "CS-V", business_id=ID64)
    bodies = valid_bodies(instance_id)

    new = marketplace.send(bodies["newInstance"])
    refreshed = marketplace.send(bodies["refreshInstance"])

    assert new.code == refreshed.code == OK
    assert new.json["instanceId"] == "B" * 64
    assert (row("B" * 64).order_id, row("B" * 64).order_line_id) == ("N" * 64, "L" * 64)
    assert row(instance_id).product_id == "P" * 64
    assert events(instance_id)[-1].order_id == "R" * 64


def test_unknown_extra_fields_are_ignored(marketplace: Marketplace) -> None:
    answer = marketplace.new_instance(
        "CS-E", business_id="extra-1", customerId="c-1", skuCode="sku", saasExtendParams="e30="
    )
    nested = marketplace.send({**refresh("extra-1"), "futureField": {"a": [1, 2]}, "amount": 3})

    assert answer.code == nested.code == OK
    assert answer.json["instanceId"] == "extra-1"
    assert event_kinds("extra-1") == ["created", "provisioned", "renewed"]


@pytest.mark.parametrize(
    "activity",
    ["deleteInstance", "NEWINSTANCE", "", None, 5, ["newInstance"], "missing"],
    ids=["unknown", "case", "empty", "null", "int", "list", "missing"],
)
def test_unknown_activity_is_invalid(marketplace: Marketplace, activity: Any) -> None:
    body: dict[str, Any] = {"orderId": "CS-A", "orderLineId": "CS-A-1", "businessId": "b-a"}
    if activity != "missing":
        body["activity"] = activity

    answer = marketplace.send(body)

    assert answer.code == INVALID
    assert business_rows() == ([], [], [])


# --- testFlag=1 --------------------------------------------------------------------------------------


def test_debug_new_instance_id_is_deterministic_per_order_line(marketplace: Marketplace) -> None:
    one = marketplace.new_instance("CS2211181819B4LVS", business_id="b-1", testFlag="1")
    same = marketplace.new_instance("CS2211181819B4LVS", business_id="b-2", testFlag="1")
    line_two = marketplace.new_instance(
        "CS2211181819B4LVS", line="CS2211181819B4LVS-000002", business_id="b-3", testFlag="1"
    )
    other_order = marketplace.new_instance("CS2211181819B4LVT", business_id="b-1", testFlag="1")

    assert one.code == same.code == line_two.code == other_order.code == OK
    ids = [a.json["instanceId"] for a in (one, same, line_two, other_order)]
    assert ids[0] == ids[1]
    assert len({ids[0], ids[2], ids[3]}) == 3
    assert all(0 < len(i) <= 64 for i in ids)
    assert "b-1" not in ids
    assert business_rows() == ([], [], [])

    # the debug call left the order line free: the real call creates its instance
    real = marketplace.new_instance("CS2211181819B4LVS", business_id="real-1")
    assert real.code == OK
    assert real.json["instanceId"] == "real-1"


def test_debug_query_answers_test_app_info_for_any_id(marketplace: Marketplace) -> None:
    real_id = created(marketplace, business_id="real-instance")
    real_password = marketplace.query(real_id).json["info"][0]["appInfo"]["password"]
    before = business_rows()

    answer = marketplace.query("never-created", real_id, testFlag="1")

    assert answer.code == OK
    assert [i["instanceId"] for i in answer.json["info"]] == ["never-created", real_id]
    for entry in answer.json["info"]:
        assert entry["appInfo"]["frontEndUrl"] == FRONTEND_TEMPLATE.format(instance_id=entry["instanceId"])
        assert entry["appInfo"].get("password") != real_password
    assert real_password.encode() not in answer.raw
    assert business_rows() == before


def test_debug_query_returns_configured_app_info_verbatim(
    request: pytest.FixtureRequest, env: dict[str, str]
) -> None:
    configured = {
        "frontEndUrl": "https://demo.example.com/login",
        "adminUrl": "https://demo.example.com/admin",
        "userName": "demo",
        "password": "Demo-Passw0rd!",
        "memo": "演示账号 demo account",
    }
    env["ISV_TEST_APP_INFO"] = json.dumps(configured, ensure_ascii=False)
    marketplace: Marketplace = request.getfixturevalue("marketplace")

    answer = marketplace.query("any-1", "any-2", testFlag="1")

    assert answer.code == OK
    assert answer.json["info"] == [
        {"instanceId": "any-1", "appInfo": configured},
        {"instanceId": "any-2", "appInfo": configured},
    ]
    assert answer.raw.isascii()  # non-ASCII memo sent as \uXXXX escapes (spec §5)
    assert business_rows() == ([], [], [])


DEBUG_CALLS: dict[str, dict[str, Any]] = {
    "newInstance": {"activity": "newInstance", "orderId": "D1", "orderLineId": "D1-1", "businessId": "db"},
    "queryInstance": {"activity": "queryInstance", "instanceId": "never-1,never-2"},
    "refreshInstance": refresh("never-created"),
    "freeze": status("never-created", "FREEZE"),
    "unfreeze": status("never-created", "UNFREEZE"),
    "releaseInstance": release("never-created", orderId="D2", orderLineId="D2-1"),
    "upgradeInstance": upgrade("never-created"),
    "changeInstanceCheck": check("never-created", PRODUCT_INFO),
    "orderNotify": notify("D3", "D3-1"),
}


@pytest.mark.parametrize("name", list(DEBUG_CALLS))
def test_debug_call_succeeds_and_writes_only_the_call_log(marketplace: Marketplace, name: str) -> None:
    body = {**DEBUG_CALLS[name], "testFlag": "1"}
    key = NOTIFY_KEY if body["activity"] == "orderNotify" else ACCESS_KEY

    answers = [marketplace.send(body, key=key), marketplace.send(body, key=key)]

    assert [a.code for a in answers] == [OK, OK]
    assert business_rows() == ([], [], [])
    logged = call_logs(activity=body["activity"])
    assert len(logged) == 2
    assert all(entry.test_flag is True and entry.result_code == OK for entry in logged)


@pytest.mark.parametrize("name", ["refreshInstance", "freeze", "releaseInstance", "upgradeInstance"])
def test_debug_call_leaves_a_real_instance_untouched(marketplace: Marketplace, name: str) -> None:
    instance_id = created(marketplace, business_id="real-1")
    body = {**DEBUG_CALLS[name], "instanceId": instance_id, "testFlag": "1"}
    before = business_rows()

    answer = marketplace.send(body)

    assert answer.code == OK
    assert business_rows() == before


def test_debug_call_with_bad_signature_fails(marketplace: Marketplace) -> None:

    body = {**DEBUG_CALLS["newInstance"], "testFlag": "1"}
    forged = signed_query("not-the-access-key", encode_body(body))

    answer = marketplace.send(body, query=forged)

    assert answer.code == AUTH
    assert "instanceId" not in answer.json
    [logged] = call_logs()
    assert (logged.test_flag, logged.result_code) == (True, AUTH)


@pytest.mark.parametrize("test_flag", ["2", "", "true", "01", " 1", True, False, 2, 1.0], ids=repr)
def test_other_test_flag_values_are_invalid(marketplace: Marketplace, test_flag: Any) -> None:
    answer = marketplace.send({**DEBUG_CALLS["newInstance"], "testFlag": test_flag})

    assert answer.code == INVALID
    assert business_rows() == ([], [], [])


def test_test_flag_zero_is_a_real_call(marketplace: Marketplace) -> None:
    answer = marketplace.new_instance("CS-Z", business_id="zero-1", testFlag="0")

    assert answer.code == OK
    assert answer.json["instanceId"] == "zero-1"
    assert row("zero-1").state == "active"
    [logged] = call_logs(activity="newInstance")
    assert logged.test_flag is False


def test_debug_call_is_still_validated(marketplace: Marketplace) -> None:
    body = {**DEBUG_CALLS["newInstance"], "orderId": "D" * 65, "testFlag": "1"}

    answer = marketplace.send(body)

    assert answer.code == INVALID
    assert "instanceId" not in answer.json


def test_debug_call_with_a_replayed_nonce_fails(marketplace: Marketplace) -> None:
    body = {**DEBUG_CALLS["refreshInstance"], "testFlag": "1"}
    nonce = "9F26" * 16

    first = marketplace.send(body, nonce=nonce)
    replayed = marketplace.send(body, nonce=nonce)

    assert (first.code, replayed.code) == (OK, AUTH)
