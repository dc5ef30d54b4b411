"""Probes for the process manager and the load balancer."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from isvserver.db import connected, database
from isvserver.migrations import pending
from isvserver.runtime import runtime

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up (no database needed)."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready to answer the marketplace: the database answers, its schema is current, the job queue answers."""
    checks: dict[str, str] = {}
    try:
        with connected():
            database.execute_sql("SELECT 1")
            checks["database"] = "ok"
            missing = pending(database.obj)
            checks["migrations"] = "ok" if not missing else f"{len(missing)} pending: run isvserver migrate"
    except Exception as exc:
        checks.setdefault("database", f"unreachable ({type(exc).__name__})")
        checks.setdefault("migrations", "unknown")
    try:
        runtime().jobs.huey.pending_count()
        checks["queue"] = "ok"
    except Exception as exc:
        checks["queue"] = f"unreachable ({type(exc).__name__})"
    ready = all(value == "ok" for value in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503
