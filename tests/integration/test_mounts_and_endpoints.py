"""The core's general mechanisms through a throwaway adapter: mounts sharing a prefix, errors owned by
path and method, a bearer token without nonce or key, HTTP status answers, exact ids and operations."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from isvserver import create_app, db, lanes
from isvserver.db import connected
from isvserver.lifecycle import FAILED, IN_PROGRESS, SUCCEEDED, fail_provisioning
from isvserver.models import CallLog, Delivery, Instance, Nonce
from isvserver.settings import Settings, load_settings

from support import probe_adapter
from support.harness import FixedClock

AUTH = {"Authorization": "Bearer probe-token"}


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    probe_adapter.install()
    env["ISV_MARKETPLACES"] = "koogallery,probe"
    return load_settings(env)


@pytest.fixture
def app(settings: Settings, clock: FixedClock) -> Iterator[Flask]:
    application = create_app(settings, clock=clock)
    yield application
    db.close_all()


def count(model: type) -> int:
    with connected():
        return model.select().count()


def test_a_call_without_nonce_or_key_repeats_freely_and_stores_no_nonce(client: FlaskClient) -> None:
    first = client.put("/probe/items/inst-1?plan=a", headers=AUTH)
    again = client.put("/probe/items/inst-1?plan=a", headers=AUTH)

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.get_json()["operation"] == again.get_json()["operation"]
    assert count(Nonce) == 0
    with connected():
        assert [c.result_code for c in CallLog.select().order_by(CallLog.id)] == ["201", "200"]


def test_the_exact_id_of_another_creation_is_a_conflict_never_a_second_instance(client: FlaskClient) -> None:
    assert client.put("/probe/items/inst-1?plan=a", headers=AUTH).status_code == 201
    conflict = client.put("/probe/items/inst-1?plan=b", headers=AUTH)
    unsafe = client.put("/probe/items/..?plan=b", headers=AUTH)

    assert conflict.status_code == 409
    assert conflict.get_json() == {
        "error": "conflict",
        "description": "the instance id belongs to another creation",
    }
    assert unsafe.status_code in (400, 404)  # Werkzeug may refuse '..' before the pipeline
    with connected():
        assert [i.instance_id for i in Instance.select()] == ["inst-1"]


def test_an_operation_is_answered_from_the_database(client: FlaskClient, settings: Settings) -> None:
    operation = client.put("/probe/items/inst-1?plan=a", headers=AUTH).get_json()["operation"]

    state = client.get(f"/probe/operations/{operation}", headers=AUTH).get_json()
    assert state == {"state": SUCCEEDED, "kind": "created", "instance": "inst-1"}  # inline provisioner

    release = client.delete("/probe/items/inst-1", headers=AUTH)
    again = client.delete("/probe/items/inst-1", headers=AUTH)
    assert (release.status_code, again.status_code) == (200, 410)
    assert release.get_json()["operation"] == again.get_json()["operation"]
    state = client.get(f"/probe/operations/{release.get_json()['operation']}", headers=AUTH).get_json()
    assert state["state"] == SUCCEEDED and state["kind"] == "released"
    assert client.get("/probe/operations/op-999999", headers=AUTH).status_code == 404
    assert client.get("/probe/operations/nonsense", headers=AUTH).status_code == 404


def test_a_wrong_token_is_the_endpoints_401(client: FlaskClient) -> None:
    response = client.put("/probe/items/inst-1?plan=a", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "auth_failed"
    assert count(Instance) == 0


def test_an_error_inside_the_pipeline_is_the_endpoints_500(client: FlaskClient) -> None:
    response = client.put("/probe/items/inst-1?plan=a&boom=1", headers=AUTH)
    assert response.status_code == 500
    assert response.get_json()["error"] == "internal"


def test_an_unhandled_error_under_a_mount_is_that_mounts_500_never_a_200(client: FlaskClient) -> None:
    response = client.get("/probe/boom")
    assert response.status_code == 500
    assert response.get_json()["mount"] == "items"


@pytest.mark.parametrize(
    ("method", "path", "status", "mount"),
    [
        ("GET", "/probe/nothing", 404, "items"),
        ("DELETE", "/probe/nothing", 404, "deletes"),
        ("PUT", "/probe/nothing", 404, "items"),
        ("POST", "/probe/items/x", 405, "items"),  # a method no mount owns: the first owner of the path
    ],
)
def test_errors_belong_to_the_mount_owning_path_and_method(
    client: FlaskClient, method: str, path: str, status: int, mount: str
) -> None:
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.get_json()["mount"] == mount


def test_an_error_answer_that_fails_is_the_cores_plain_500(client: FlaskClient) -> None:
    response = client.get("/probe/fragile/nothing")
    assert response.status_code == 500
    assert response.get_json() == {"error": "not found", "status": 500}


def test_one_blueprint_serves_a_second_prefix_with_the_cores_errors(client: FlaskClient) -> None:
    assert client.put("/probe-again/items/inst-2?plan=a", headers=AUTH).status_code == 201
    response = client.get("/probe-again/nothing")
    assert (response.status_code, response.get_json()) == (404, {"error": "not found", "status": 404})


def test_koogallery_keeps_its_answers_beside_another_adapter(client: FlaskClient) -> None:
    response = client.put("/saasproduce")  # GET is KooGallery V1's mount on the same path
    assert response.status_code == 405
    assert response.get_json()["resultCode"] == "000002"
    assert "Body-Sign" in response.headers
    v1 = client.get("/saasproduce")
    assert (v1.status_code, v1.get_json()["resultCode"]) == (200, "000002")
    assert "Body-Sign" in v1.headers


def test_the_openapi_document_merges_interfaces_per_method(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    assert set(paths["/saasproduce"]) >= {"get", "post"}


def test_a_failed_creation_is_a_failed_operation(client: FlaskClient, settings: Settings) -> None:
    from isvserver.runtime import runtime

    with client.application.app_context(), connected():
        lifecycle = runtime().lifecycle
        lifecycle.provisioner.inline = False  # type: ignore[misc]
        try:
            operation = lifecycle.create("probe", "k", "inst-9", exact=True)
            assert lifecycle.operation(operation.id).state == IN_PROGRESS
            fail_provisioning("inst-9", "the product said no")
            failed = lifecycle.operation(operation.id)
            assert (failed.state, failed.description) == (FAILED, "provisioning failed: the product said no")
            freeze = lifecycle.set_frozen("inst-9", True)
            assert lifecycle.operation(freeze.id).state == IN_PROGRESS  # its delivery waits
            Delivery.update(status="failed", last_error="HTTP 500").where(
                Delivery.event == int(freeze.id.removeprefix("op-"))
            ).execute()
            assert lifecycle.operation(freeze.id).state == FAILED
            assert [(op.kind, op.state) for op in lifecycle.operations("inst-9")] == [
                ("created", FAILED),
                ("frozen", FAILED),
            ]
        finally:
            lifecycle.provisioner.inline = True  # type: ignore[misc]


def test_the_worker_learns_which_requests_only_read_from_their_mounts(app: Flask) -> None:
    """KooGallery's queries (V2 body, V1 query string) read; a mount without a word: GET and HEAD read."""
    reads = app.extensions[lanes.EXTENSION]
    produce = "/saasproduce"

    def judged(method: str, path: str, query: str = "", body: bytes = b"") -> bool:
        return reads(lanes.Arrival(method, path, query, body))

    assert judged("POST", produce, body=b'{"activity": "queryInstance", "instanceId": "i"}')
    assert judged("POST", produce + "/", body=b'{"activity":"changeInstanceCheck"}')
    assert not judged("POST", produce, body=b'{"activity": "newInstance", "orderId": "o"}')
    assert not judged("POST", produce, body=b'{"activity": "queryInstance"')  # cut or broken: a change
    assert judged("GET", produce, "activity=queryInstance&instanceId=i&authToken=t")
    assert not judged("GET", produce, "activity=newInstance&orderId=o&authToken=t")
    assert not judged("GET", produce, "activity=queryInstance&activity=newInstance")
    assert judged("GET", "/probe/items/inst-1") and judged("HEAD", "/health")
    assert not judged("PUT", "/probe/items/inst-1") and not judged("POST", "/nowhere")
