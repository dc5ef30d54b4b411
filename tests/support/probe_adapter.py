"""A throwaway adapter for the core's tests: two mounts sharing a prefix, a bearer token (no nonce, no
HMAC key), HTTP status codes as answers, creation with the platform's exact id, operations to poll."""

from __future__ import annotations

import hmac
import json
import sys
import types
from typing import Any

from flask import Blueprint, Request, Response, request

from isvserver import calls
from isvserver.adapters import Adapter, Mount
from isvserver.calllog import CallRecord
from isvserver.calls import Answer, Handling, Outcome, Verification
from isvserver.freshness import Verdict
from isvserver.runtime import Runtime

TOKEN = b"probe-token"
STATUS = {
    Outcome.SUCCESS: 200,
    Outcome.IN_PROGRESS: 202,
    Outcome.AUTH_FAILED: 401,
    Outcome.INVALID: 400,
    Outcome.NOT_FOUND: 404,
    Outcome.INTERNAL: 500,
    Outcome.CONFLICT: 409,
    Outcome.GONE: 410,
}

items = Blueprint("probe_items", __name__)
deletes = Blueprint("probe_deletes", __name__)
fragile = Blueprint("probe_fragile", __name__)


def _create(rt: Runtime, data: dict[str, Any]) -> Answer:
    operation = rt.lifecycle.create("probe", f"{data['id']}:{data['plan']}", data["id"], exact=True)
    return Answer(201 if operation.changed else 200, {"operation": operation.id})


def _read(rt: Runtime, data: dict[str, Any]) -> Answer:
    state = rt.lifecycle.operation(data["operation"])
    if state is None:
        return Answer(404, {"error": "unknown operation"})
    return Answer(200, {"state": state.state, "kind": state.kind, "instance": state.instance_id})


def _release(rt: Runtime, data: dict[str, Any]) -> Answer:
    operation = rt.lifecycle.release(data["id"])
    return Answer(200 if operation.changed else 410, {"operation": operation.id})


class ProbeEndpoint(calls.Endpoint):
    """A bearer token in a header: no nonce, no key interface; answers in HTTP status codes."""

    interface = "probe"
    activities = frozenset({"create", "read", "release"})

    def __init__(self, activity: str, window_s: float = 0.0) -> None:
        self.activity = activity
        self.window_s = window_s

    def replay_window_s(self, settings: Any) -> float:
        return self.window_s or super().replay_window_s(settings)

    def parse(self, raw: bytes, req: Request) -> dict[str, Any] | None:
        return {**req.view_args, **req.args}  # type: ignore[dict-item]

    def record_ids(self, call: CallRecord, body: dict[str, Any]) -> None:
        call.activity = self.activity
        call.instance_id = body.get("id")

    def verify(
        self, req: Request, raw: bytes, body: dict[str, Any] | None, keys: tuple[str, ...], now_ms: float
    ) -> Verification:
        assert keys == ()  # no key interface: no key is read
        given = req.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        if hmac.compare_digest(given, TOKEN):
            return Verification(Verdict.VERIFIED.value)
        return Verification(Verdict.BAD_SIGNATURE.value, "bad token", Outcome.AUTH_FAILED)

    def check(self, call: CallRecord, body: dict[str, Any] | None) -> calls.Reply | Handling:
        handler = {"create": _create, "read": _read, "release": _release}[self.activity]
        if body is not None and body.get("boom"):
            raise RuntimeError("the probe broke")  # answered by the pipeline's INTERNAL reply
        return Handling(handler, body or {}, read_only=self.activity == "read")

    def reply(self, outcome: Outcome, message: str, **fields: Any) -> calls.Reply:
        return Answer(STATUS[outcome], {"error": outcome.value, "description": message})

    def render(self, answer: calls.Reply, key: str, status: int, call: CallRecord) -> Response:
        assert isinstance(answer, Answer)
        response = Response(json.dumps(answer.body), status=answer.status, content_type="application/json")
        response.headers.extend(answer.headers)
        return response


@items.put("/items/<id>")
def create(id: str) -> Response:
    return calls.handle(ProbeEndpoint("create"))


@items.get("/operations/<operation>")
def read(operation: str) -> Response:
    return calls.handle(ProbeEndpoint("read"))


@items.get("/boom")
def boom() -> Response:
    raise RuntimeError("outside the pipeline")


@deletes.delete("/items/<id>")
def release(id: str) -> Response:
    return calls.handle(ProbeEndpoint("release"))


def broken_answer(status: int, message: str) -> Response:
    raise RuntimeError("the error answer needs what is broken")


def error_answer(name: str) -> Any:
    def answer(status: int, message: str) -> Response:
        body = json.dumps({"error": message, "mount": name, "method": request.method})
        return Response(body, status=status, content_type="application/json")

    return answer


def openapi(settings: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A GET on the KooGallery produce path, beside its POST."""
    path = settings.of("koogallery").produce_path
    return {path: {"get": {"operationId": "probeRead", "responses": {"200": {"description": "ok"}}}}}, {}


ADAPTER = Adapter(
    name="probe",
    mounts=(
        Mount(items, lambda settings: "/probe", error_answer("items"), frozenset({"GET", "PUT"})),
        Mount(deletes, lambda settings: "/probe", error_answer("deletes"), frozenset({"DELETE"})),
        Mount(fragile, lambda settings: "/probe/fragile", broken_answer),
        Mount(items, lambda settings: "/probe-again"),  # the same blueprint at a second prefix
    ),
    openapi=openapi,
)


def install() -> None:
    """Make `probe` loadable by name, as if it were isvserver.marketplaces.probe."""
    module = types.ModuleType("isvserver.marketplaces.probe")
    module.ADAPTER = ADAPTER  # type: ignore[attr-defined]
    sys.modules["isvserver.marketplaces.probe"] = module
