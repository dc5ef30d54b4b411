"""The operator's commands (`isvserver instances|log|keys`) on SQLite and PostgreSQL, and keys that the
running app accepts or refuses at once."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest
from click.testing import Result
from flask.testing import FlaskClient

from isvserver import create_app, db, keystore
from isvserver.cli import call_log, instances, keys
from isvserver.marketplaces.koogallery.signing import body_sign_valid
from isvserver.models import Instance
from isvserver.provisioning import ProvisioningError
from isvserver.settings import Settings

from support.cli import invoke_cli
from support.harness import ACCESS_KEY, NOTIFY_KEY, SECOND_ACCESS_KEY, Answer, Marketplace, base_env

# The operator's command groups, as the tests call them.
admin = SimpleNamespace(keys=keys.keys, instances=instances.instances, log_group=call_log.log_group)

OK, AUTH = "000000", "000001"
NEW_KEY = "operator-added-key-1"
Cli = Callable[..., Result]


class _AnyTime:
    """Equal to any time as the tables print it."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", other) is not None


ANY_TIME: Any = _AnyTime()


def fp(key: str) -> str:
    return keystore.fingerprint(key)


def run_cli(env: dict[str, str], group: click.Group, *args: str, input: str | None = None) -> Result:
    """Run `isvserver GROUP ARGS` in-process with exactly `env` as its ISV_* settings.

    CliRunner only overlays `env` on os.environ, so inherited ISV_* variables are removed explicitly;
    the command binds the shared database proxy, so the test's binding is put back afterwards.
    """
    return invoke_cli(env, group, *args, input=input)


def _delete_stored_keys(url: str) -> None:
    database = db.make_database(url)
    with database.connection_context():
        database.execute_sql("DELETE FROM access_key")
    db.close_all(database)


@pytest.fixture
def no_stored_keys(database_url: str) -> Iterator[None]:
    """The shared PostgreSQL test database is emptied of the tables in ALL_MODELS only: access_key too."""
    _delete_stored_keys(database_url)
    yield
    _delete_stored_keys(database_url)


@pytest.fixture
def cli(env: dict[str, str], no_stored_keys: None) -> Cli:
    """`cli(group, *args, input=...)` runs an admin command against the test database."""
    return lambda group, *args, input=None: run_cli(env, group, *args, input=input)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def failed(result: Result) -> str:
    assert result.exit_code == 1, result.output
    return result.output


def request_id(answer: Answer) -> str:
    return answer.headers["X-Request-Id"]


def new_instance(marketplace: Marketplace, order_id: str) -> str:
    answer = marketplace.new_instance(order_id, business_id=f"inst-{order_id}")
    assert answer.code == OK, answer.json
    return answer.json["instanceId"]


def basic(marketplace: Marketplace, key: str, order_id: str = "CSK1", reply_key: str | None = None) -> Answer:
    """A newInstance signed with `key`."""
    body = {
        "activity": "newInstance",
        "orderId": order_id,
        "orderLineId": f"{order_id}-000001",
        "businessId": f"inst-{order_id}",
    }
    return marketplace.send(body, key, reply_key=reply_key)


def table_rows(output: str) -> list[list[str]]:
    """The rows under the header of a plain table (cells split on runs of 2+ spaces)."""
    lines = [line for line in output.splitlines() if line.strip()]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


# --- instances ----------------------------------------------------------------------------------------


def test_instances_list_shows_newest_first_and_filters(cli: Cli, marketplace: Marketplace) -> None:
    first, second, third = (new_instance(marketplace, order) for order in ("CSA1", "CSA2", "CSA3"))
    assert (
        marketplace.send({"activity": "updateInstanceStatus", "instanceId": second, "status": "FREEZE"}).code
        == OK
    )
    renewal = {
        "activity": "refreshInstance",
        "instanceId": first,
        "orderId": "CSRENEW1",
        "orderLineId": "CSRENEW1-000001",
        "scene": "RENEWAL",
        "expireTime": "20300101000000",
    }
    assert marketplace.send(renewal).code == OK

    output = ok(cli(admin.instances, "list"))
    assert output.splitlines()[0].split() == [
        "instance_id",
        "state",
        "order/line",
        "expiry",
        "created",
        "updated",
    ]
    rows = table_rows(output)
    assert [r[0] for r in rows] == [third, second, first]
    assert [r[1] for r in rows] == ["active", "frozen", "active"]
    assert rows[2][2] == "CSA1/CSA1-000001"
    assert rows[2][3] == "2030-01-01 00:00:00"

    assert [r[0] for r in table_rows(ok(cli(admin.instances, "list", "--state", "frozen")))] == [second]
    assert [r[0] for r in table_rows(ok(cli(admin.instances, "list", "--order", "CSA3")))] == [third]
    by_renewal = ok(cli(admin.instances, "list", "--order", "CSRENEW1"))
    assert [r[0] for r in table_rows(by_renewal)] == [first]
    assert ok(cli(admin.instances, "list", "--state", "released")) == "no instances match\n"

    limited = cli(admin.instances, "list", "--limit", "2")
    assert [r[0] for r in table_rows(limited.stdout)] == [third, second]
    assert "only the first 2 shown" in limited.stderr

    listed = json.loads(ok(cli(admin.instances, "list", "--json")))
    assert [item["instance_id"] for item in listed] == [third, second, first]
    assert listed[2]["expire_at"] == "2030-01-01T00:00:00.000Z"
    assert not any("password" in name for item in listed for name in item)


def test_instances_list_rejects_an_unknown_state(cli: Cli) -> None:
    result = cli(admin.instances, "list", "--state", "deleted")
    assert result.exit_code == 2
    assert "'deleted' is not one of" in result.output


def test_instances_show_fields_history_and_calls_never_the_password(
    cli: Cli, marketplace: Marketplace
) -> None:
    created = marketplace.new_instance("CSB1", business_id="shop-1")
    instance_id = created.json["instanceId"]
    queried = marketplace.query(instance_id)
    password = queried.json["info"][0]["appInfo"]["password"]
    frozen = marketplace.send(
        {"activity": "updateInstanceStatus", "instanceId": instance_id, "status": "FREEZE"}
    )
    other = new_instance(marketplace, "CSB2")
    both = marketplace.query(other, instance_id)
    unrelated = marketplace.query(other)
    with db.connected():
        sealed = Instance.get(Instance.instance_id == instance_id).password_encrypted

    output = ok(cli(admin.instances, "show", instance_id))

    assert password not in output and sealed not in output
    assert re.search(r"^password\s+stored encrypted \(not shown\)$", output, re.M)
    assert re.search(rf"^instance_id\s+{instance_id}$", output, re.M)
    assert re.search(r"^state\s+frozen$", output, re.M)
    assert re.search(r"^order_line_id\s+CSB1-000001$", output, re.M)
    assert re.search(rf"^front_end_url\s+https://app.example.com/t/{instance_id}$", output, re.M)
    assert re.search(rf"^admin_url\s+https://app.example.com/t/{instance_id}/admin$", output, re.M)
    assert re.search(r"^user_name\s+\S+$", output, re.M)
    history = output.split("lifecycle history (3 events)\n")[1].split("\n\n")[0]
    assert [r[1:4] for r in table_rows(history)] == [
        ["created", "provisioning → provisioning", "CSB1/CSB1-000001"],  # as lifecycle._record stores it
        ["provisioned", "provisioning → active", "-"],
        ["frozen", "active → frozen", "-"],
    ]
    calls = output.split("callback log (4 calls, newest first)\n")[1]
    assert [r[1] for r in table_rows(calls)] == [
        request_id(both),
        request_id(frozen),
        request_id(queried),
        request_id(created),
    ]
    assert request_id(unrelated) not in output

    shown = json.loads(ok(cli(admin.instances, "show", instance_id, "--json")))
    assert password not in json.dumps(shown) and sealed not in json.dumps(shown)
    assert shown["instance"]["password_stored"] is True
    assert "password_encrypted" not in shown["instance"]
    assert [e["kind"] for e in shown["events"]] == ["created", "provisioned", "frozen"]
    assert [c["request_id"] for c in shown["calls"]][-1] == request_id(created)


class ProductDown:
    """A queued provisioner whose product does not answer."""

    inline = False

    def provision(self, event: Any) -> Any:
        raise ProvisioningError("product answered HTTP 503")

    def apply(self, event: Any) -> None:
        raise ProvisioningError("product answered HTTP 503")

    def check_change(self, instance: Any, product_info: dict[str, Any]) -> str | None:
        return None


def test_instances_show_says_how_far_each_change_got_to_the_product(cli: Cli, settings: Settings) -> None:
    app = create_app(dataclasses.replace(settings, provision_budget_ms=0), provisioner=ProductDown())
    marketplace = Marketplace(app.test_client(), settings.of("koogallery").produce_path)
    try:
        instance_id = marketplace.new_instance("CSD1", business_id="down-1").json["instanceId"]
        marketplace.send({"activity": "updateInstanceStatus", "instanceId": instance_id, "status": "FREEZE"})
        with db.connected():
            app.extensions["isvserver"].jobs.run_deliveries(instance_id)
    finally:
        db.close_all()

    output = ok(cli(admin.instances, "show", instance_id))
    shown = json.loads(ok(cli(admin.instances, "show", instance_id, "--json")))

    history = output.split("lifecycle history (2 events)\n")[1].split("\n\n")[0]
    created, frozen = table_rows(history)
    assert created[-1].startswith("pending (1 failed attempts, next at ")
    assert created[-1].endswith(": ProvisioningError: product answered HTTP 503)")
    assert frozen[-1] == "pending (0 failed attempts)"
    assert [(e["kind"], e["delivery"]["status"], e["delivery"]["attempts"]) for e in shown["events"]] == [
        ("created", "pending", 1),
        ("frozen", "pending", 0),
    ]


def test_instances_show_unknown_id_fails(cli: Cli) -> None:
    assert failed(cli(admin.instances, "show", "no-such-instance")) == "Error: no instance no-such-instance\n"


# --- the callback log ---------------------------------------------------------------------------------


@pytest.fixture
def calls(marketplace: Marketplace) -> dict[str, Answer]:
    """A created instance, a forged call, a query and a freeze, in that order."""
    created = marketplace.new_instance("CSL1", business_id="log-1")
    forged = basic(marketplace, "not-a-configured-key", "CSL9", reply_key=ACCESS_KEY)
    assert forged.code == AUTH
    queried = marketplace.query("log-1")
    frozen = marketplace.send({"activity": "updateInstanceStatus", "instanceId": "log-1", "status": "FREEZE"})
    return {"created": created, "forged": forged, "queried": queried, "frozen": frozen}


def test_log_list_newest_first(cli: Cli, calls: dict[str, Answer]) -> None:
    output = ok(cli(admin.log_group, "list"))

    assert output.splitlines()[0].split() == [
        "time", "request_id", "activity", "verdict", "code", "latency", "ids"
    ]  # fmt: skip
    rows = table_rows(output)
    assert [r[1] for r in rows] == [
        request_id(calls[name]) for name in ("frozen", "queried", "forged", "created")
    ]
    assert rows[2][2:5] == ["newInstance", "bad_signature", AUTH]
    assert rows[3][2:5] == ["newInstance", "verified", OK]
    assert rows[3][5].endswith(" ms")
    assert rows[3][6] == "order=CSL1 line=CSL1-000001"
    assert rows[0][6] == "instance=log-1"


def test_log_list_filters(cli: Cli, calls: dict[str, Answer]) -> None:
    def listed(*args: str) -> list[str]:
        return [r[1] for r in table_rows(ok(cli(admin.log_group, "list", *args)))]

    assert listed("--code", AUTH) == [request_id(calls["forged"])]
    assert listed("--order", "CSL1") == [request_id(calls["created"])]
    assert listed("--instance", "log-1") == [request_id(calls[n]) for n in ("frozen", "queried")]
    assert listed("--activity", "queryInstance") == [request_id(calls["queried"])]
    assert listed("--code", OK, "--activity", "newInstance") == [request_id(calls["created"])]
    assert ok(cli(admin.log_group, "list", "--code", "000003")) == "no calls match\n"

    limited = cli(admin.log_group, "list", "--limit", "1")
    assert [r[1] for r in table_rows(limited.stdout)] == [request_id(calls["frozen"])]
    assert "only the first 1 shown" in limited.stderr

    as_json = json.loads(ok(cli(admin.log_group, "list", "--code", AUTH, "--json")))
    assert [(c["request_id"], c["verdict"], c["result_code"]) for c in as_json] == [
        (request_id(calls["forged"]), "bad_signature", AUTH)
    ]


def test_log_show_prints_every_column(cli: Cli, calls: dict[str, Answer]) -> None:
    forged = request_id(calls["forged"])

    output = ok(cli(admin.log_group, "show", forged))

    values = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in output.splitlines())
    assert set(values) == {
        "id", "request_id", "received_at", "interface", "activity", "test_flag", "instance_id",
        "order_id", "order_line_id", "business_id", "verdict", "reason", "result_code", "result_msg",
        "latency_ms", "source_address", "delivery",
    }  # fmt: skip
    assert values["request_id"] == forged
    assert values["delivery"] == "sent"
    assert values["verdict"] == "bad_signature"
    assert values["reason"] == "authentication failed: signature does not match"
    assert values["result_code"] == AUTH
    assert values["order_id"] == "CSL9"
    assert values["test_flag"] == "no"

    shown = json.loads(ok(cli(admin.log_group, "show", forged, "--json")))
    assert shown["request_id"] == forged and shown["result_code"] == AUTH
    assert set(shown) == set(values)


def test_log_show_unknown_request_fails(cli: Cli) -> None:
    assert failed(cli(admin.log_group, "show", "0" * 32)) == f"Error: no call with request id {'0' * 32}\n"


def test_control_characters_sent_by_a_caller_reach_the_terminal_escaped(
    cli: Cli, marketplace: Marketplace
) -> None:
    forged = basic(marketplace, ACCESS_KEY, "CS\x1b[2JX")  # authentic: a rejected call would not store it

    output = ok(cli(admin.log_group, "show", request_id(forged)))

    assert "\x1b" not in output
    assert re.search(r"^order_id\s+CS\\x1b\[2JX$", output, re.M)


# --- keys ---------------------------------------------------------------------------------------------


def key_table(cli: Cli) -> list[list[str]]:
    return table_rows(ok(cli(admin.keys, "list")))


def test_keys_list_names_keys_by_fingerprint_only(cli: Cli) -> None:
    output = ok(cli(admin.keys, "list"))

    assert output.splitlines()[0].split() == [
        "interface", "fingerprint", "source", "status", "added", "retired", "note"
    ]  # fmt: skip
    assert table_rows(output) == [
        ["basic", fp(ACCESS_KEY), "env", "active", "-", "-", "-"],
        ["basic", fp(SECOND_ACCESS_KEY), "env", "active", "-", "-", "-"],
        ["notify", fp(NOTIFY_KEY), "env", "active", "-", "-", "-"],
    ]
    for key in (ACCESS_KEY, SECOND_ACCESS_KEY, NOTIFY_KEY):
        assert key not in output
    listed = json.loads(ok(cli(admin.keys, "list", "--json")))
    assert [(k["interface"], k["fingerprint"], k["source"], k["active"]) for k in listed] == [
        ("basic", fp(ACCESS_KEY), "env", True),
        ("basic", fp(SECOND_ACCESS_KEY), "env", True),
        ("notify", fp(NOTIFY_KEY), "env", True),
    ]


def test_added_key_is_accepted_at_once_by_the_running_app(
    cli: Cli, marketplace: Marketplace, database_url: str
) -> None:
    """Needs views.py to take its keys from keystore.verification_keys."""
    assert basic(marketplace, NEW_KEY, "CSK0", reply_key=ACCESS_KEY).code == AUTH

    output = ok(cli(admin.keys, "add", "basic", "--note", "rotation 2025", input=NEW_KEY + "\n"))

    assert output == f"added basic key {fp(NEW_KEY)}: every worker accepts it now\n"
    answer = basic(marketplace, NEW_KEY, "CSK1")  # the reply is signed with the key that verified
    assert answer.code == OK
    assert key_table(cli)[2] == ["basic", fp(NEW_KEY), "stored", "active", ANY_TIME, "-", "rotation 2025"]
    with db.connected():
        sealed = keystore.AccessKey.get(keystore.AccessKey.fingerprint == fp(NEW_KEY)).key_sealed
    assert NEW_KEY not in sealed


def test_generated_key_is_printed_once_and_accepted(cli: Cli, marketplace: Marketplace) -> None:
    """Needs views.py to take its keys from keystore.verification_keys."""
    output = ok(cli(admin.keys, "add", "notify", "--generate"))

    match = re.fullmatch(
        r"added notify key ([0-9a-f]{16}): every worker accepts it now\n"
        r"key \(shown only now; enter it in the seller console\): ([0-9a-f-]{36})\n",
        output,
    )
    assert match, output
    generated = match.group(2)
    assert match.group(1) == fp(generated)
    assert generated not in ok(cli(admin.keys, "list")) + ok(cli(admin.keys, "list", "--json"))
    notify = {"activity": "orderNotify", "orderId": "CSN1", "orderLineId": "CSN1-000001"}
    assert marketplace.send(notify, generated).code == OK
    assert marketplace.send(notify, NOTIFY_KEY).code == OK


def test_key_typed_at_the_prompt_is_hidden(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "_interactive", lambda: True)

    output = ok(cli(admin.keys, "add", "basic", input=f"{NEW_KEY}\n{NEW_KEY}\n"))

    assert NEW_KEY not in output
    assert f"added basic key {fp(NEW_KEY)}" in output


@pytest.mark.parametrize(
    ("interface", "key", "message"),
    [
        ("basic", ACCESS_KEY, f"key {fp(ACCESS_KEY)} is already active: it is in ISV_ACCESS_KEYS"),
        ("basic", NOTIFY_KEY, f"key {fp(NOTIFY_KEY)} is already active: it is in ISV_NOTIFY_KEYS"),
        ("notify", SECOND_ACCESS_KEY, "already active: it is in ISV_ACCESS_KEYS (basic interface)"),
        ("basic", "short", "a key must be at least 8 printable ASCII characters"),
        ("basic", "fifteen-chars-1", "a key must be at least 16 characters in production"),
        ("basic", "has,a,comma", "a key must not contain a comma"),
        ("basic", "", "no key: type it at the prompt, pipe it on standard input or use --generate"),
    ],
)
def test_keys_add_refuses(cli: Cli, interface: str, key: str, message: str) -> None:
    output = failed(cli(admin.keys, "add", interface, input=key + "\n"))

    assert message in output
    assert len(key_table(cli)) == 3


def test_a_key_is_stored_once(cli: Cli) -> None:
    ok(cli(admin.keys, "add", "basic", input=NEW_KEY))

    again = failed(cli(admin.keys, "add", "notify", input=NEW_KEY))

    assert f"key {fp(NEW_KEY)} is already stored as an active basic key" in again
    assert len(key_table(cli)) == 4


def test_retired_env_key_is_refused_at_once_and_the_other_still_works(
    cli: Cli, marketplace: Marketplace
) -> None:
    """Needs views.py to take its keys from keystore.verification_keys."""
    assert basic(marketplace, SECOND_ACCESS_KEY, "CSR0").code == OK

    output = ok(cli(admin.keys, "retire", fp(SECOND_ACCESS_KEY)))

    assert output == (
        f"retired basic key {fp(SECOND_ACCESS_KEY)} (env): every worker refuses it now\n"
        "remove it from ISV_ACCESS_KEYS at the next restart\n"
    )
    refused = basic(marketplace, SECOND_ACCESS_KEY, "CSR1", reply_key=ACCESS_KEY)
    assert refused.code == AUTH
    assert basic(marketplace, ACCESS_KEY, "CSR2").code == OK
    assert key_table(cli)[1] == [
        "basic", fp(SECOND_ACCESS_KEY), "env", "retired", "-", ANY_TIME, "retired from ISV_ACCESS_KEYS"
    ]  # fmt: skip
    denied = table_rows(ok(cli(admin.log_group, "list", "--code", AUTH)))
    assert [r[1] for r in denied] == [request_id(refused)]


def test_retired_stored_key_is_refused_at_once(cli: Cli, marketplace: Marketplace) -> None:
    """Needs views.py to take its keys from keystore.verification_keys."""
    ok(cli(admin.keys, "add", "basic", input=NEW_KEY))
    assert basic(marketplace, NEW_KEY, "CSS0").code == OK

    output = ok(cli(admin.keys, "retire", fp(NEW_KEY).upper(), "--note", "leaked"))

    assert output == f"retired basic key {fp(NEW_KEY)} (stored): every worker refuses it now\n"
    assert basic(marketplace, NEW_KEY, "CSS1", reply_key=ACCESS_KEY).code == AUTH
    assert key_table(cli)[2] == ["basic", fp(NEW_KEY), "stored", "retired", ANY_TIME, ANY_TIME, "leaked"]


def test_replies_outside_the_produce_flow_are_signed_with_the_first_active_key(
    cli: Cli, client: FlaskClient
) -> None:
    """404 and 405 replies under the produce path: once ACCESS_KEY (the first configured) is retired,
    SECOND_ACCESS_KEY signs. Outside every adapter's prefix a 404 is the core's plain JSON."""
    before = client.get("/saasproduce/no-such-path")
    ok(cli(admin.keys, "retire", fp(ACCESS_KEY)))
    not_found = client.get("/saasproduce/no-such-path")
    not_allowed = client.put("/saasproduce")  # GET is V1's (signed the same way, tested there)
    elsewhere = client.get("/no-such-path")

    assert (elsewhere.status_code, elsewhere.get_json()) == (
        404,
        {
            "error": "not found",
            "status": 404,
            "hint": "the marketplace calls POST /saasproduce (its path is ISV_PRODUCE_PATH)",
        },
    )
    assert "Body-Sign" not in elsewhere.headers

    assert before.status_code == 404
    assert body_sign_valid(ACCESS_KEY, before.data, before.headers["Body-Sign"])
    assert (not_found.status_code, not_allowed.status_code) == (404, 405)
    for answer in (not_found, not_allowed):
        assert body_sign_valid(SECOND_ACCESS_KEY, answer.data, answer.headers["Body-Sign"])
        assert not body_sign_valid(ACCESS_KEY, answer.data, answer.headers["Body-Sign"])


def test_the_last_basic_key_cannot_be_retired(cli: Cli, marketplace: Marketplace) -> None:
    ok(cli(admin.keys, "retire", fp(SECOND_ACCESS_KEY)))

    refused = failed(cli(admin.keys, "retire", fp(ACCESS_KEY)))

    assert refused == (
        f"Error: key {fp(ACCESS_KEY)} is the last active key of the basic interface; "
        "add its successor first (`isvserver keys add basic`)\n"
    )
    assert basic(marketplace, ACCESS_KEY, "CSLAST").code == OK
    ok(cli(admin.keys, "add", "basic", input=NEW_KEY))
    ok(cli(admin.keys, "retire", fp(ACCESS_KEY)))
    assert [row[3] for row in key_table(cli)[:3]] == ["retired", "retired", "active"]


def test_retiring_the_last_notify_key_warns(cli: Cli) -> None:
    output = ok(cli(admin.keys, "retire", fp(NOTIFY_KEY)))

    assert output.endswith("the notify interface has no active key left: its calls now fail with 000001\n")


def test_retire_refuses_unknown_and_retired_keys(cli: Cli) -> None:
    assert "no key has fingerprint 0123456789abcdef" in failed(cli(admin.keys, "retire", "0123456789abcdef"))
    ok(cli(admin.keys, "retire", fp(SECOND_ACCESS_KEY)))

    again = failed(cli(admin.keys, "retire", fp(SECOND_ACCESS_KEY)))
    reused = failed(cli(admin.keys, "add", "basic", input=SECOND_ACCESS_KEY))

    assert f"key {fp(SECOND_ACCESS_KEY)} is already retired (since " in again
    assert f"key {fp(SECOND_ACCESS_KEY)} was retired; a retired key cannot be used again" in reused


def test_verification_keys_order_and_unreadable_keys(
    cli: Cli, settings: Settings, env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    ok(cli(admin.keys, "add", "basic", input="stored-basic-key-1"))
    ok(cli(admin.keys, "add", "basic", input="stored-basic-key-2"))
    ok(cli(admin.keys, "add", "notify", input="stored-notify-key-1"))
    ok(cli(admin.keys, "retire", fp(ACCESS_KEY)))
    other_data_key = {**env, "ISV_DATA_KEY": "Z" * 43 + "="}
    ok(run_cli(other_data_key, admin.keys, "add", "basic", input="sealed-elsewhere-key"))
    db.bind(settings.database_url)
    logger = logging.getLogger("isvserver.keystore")  # the app's `isvserver` logger may not propagate
    logger.addHandler(caplog.handler)

    try:
        with db.connected():
            basic_keys = keystore.verification_keys(settings, "basic")
            notify_keys = keystore.verification_keys(settings, "notify")
    finally:
        logger.removeHandler(caplog.handler)
        db.close_all()

    assert basic_keys == (SECOND_ACCESS_KEY, "stored-basic-key-1", "stored-basic-key-2")
    assert notify_keys == (NOTIFY_KEY, "stored-notify-key-1")
    assert "a stored access key cannot be decrypted with ISV_DATA_KEY" in caplog.text


# --- settings and database errors -------------------------------------------------------------------------


COMMANDS = [
    (admin.instances, ("list",)),
    (admin.instances, ("show", "x")),
    (admin.log_group, ("list",)),
    (admin.log_group, ("show", "x")),
    (admin.keys, ("list",)),
    (admin.keys, ("add", "basic", "--generate")),
    (admin.keys, ("retire", "0123456789abcdef")),
]


@pytest.mark.parametrize(("group", "args"), COMMANDS)
def test_invalid_settings_end_every_command_with_the_message(
    tmp_path: Path, group: click.Group, args: tuple[str, ...]
) -> None:
    env = base_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}", ISV_SIGNATURE_TOLERANCE="soon")

    result = run_cli(env, group, *args)

    assert result.exit_code == 1
    assert result.output == "Error: invalid settings: ISV_SIGNATURE_TOLERANCE must be a whole number\n"


@pytest.mark.parametrize(("group", "args"), COMMANDS)
def test_unmigrated_database_says_to_migrate(
    tmp_path: Path, group: click.Group, args: tuple[str, ...]
) -> None:
    env = base_env(tmp_path, f"sqlite:///{tmp_path / 'empty.sqlite3'}")

    result = run_cli(env, group, *args)

    assert result.exit_code == 1
    assert result.output.startswith("Error: database error on sqlite:///")
    assert result.output.endswith("(run `isvserver migrate`)\n")
