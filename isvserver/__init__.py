"""isvserver: the server an ISV runs so that a cloud marketplace can sell its SaaS."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from isvserver import db, files, lanes, logs, usage_push
from isvserver.adapters import Mount
from isvserver.provisioning import Provisioner
from isvserver.settings import Settings, load_settings
from isvserver.web import delivery, health, metrics, openapi


def create_app(
    settings: Settings | None = None,
    provisioner: Provisioner | None = None,
    clock: Callable[[], float] | None = None,
) -> Flask:
    """Build the WSGI app; opens no database connection (each request opens its own)."""
    from isvserver.adapters import load_all, load_part
    from isvserver.jobs import Jobs
    from isvserver.lifecycle import Lifecycle, register_app_info_check, register_event_types
    from isvserver.provisioning.loader import load_provisioner
    from isvserver.runtime import Runtime, wall_clock_ms

    settings = settings or load_settings()
    logs.configure(settings.log_level, settings.log_format)
    app = Flask(__name__, instance_path=str(settings.instance_dir))
    app.wsgi_app = delivery.Tracked(app.wsgi_app)  # the arrival, and whether each answer was written
    files.private_dir(settings.instance_dir)  # 0700: keys, databases, queue and metrics live there
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1  # see calls.read_body
    # No route answers OPTIONS by itself: on an adapter's paths it is a 405 in the adapter's terms.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    adapters = load_all(settings.marketplaces)
    parts = tuple(load_part(name) for name in settings.parts)
    for adapter in adapters:
        register_event_types(dict(adapter.event_types))
        if adapter.app_info_check is not None:
            register_app_info_check(adapter.name, adapter.app_info_check)
    provisioner = provisioner or load_provisioner(settings)
    jobs = Jobs(settings, provisioner)
    for declared in (*adapters, *parts):
        if declared.init_jobs is not None:
            declared.init_jobs(jobs)
    usage_push.register(jobs, settings)
    lifecycle = Lifecycle(provisioner, jobs, settings.data_key)
    app.extensions["isvserver"] = Runtime(settings, provisioner, jobs, lifecycle, clock or wall_clock_ms)
    jobs.bind(app)
    db.bind(settings.database_url)
    mounted, marketplace_roots = [], set()
    for declared in (*adapters, *parts):  # marketplaces' mounts and application parts' alike
        for mount in declared.mounts:
            prefix = mount.prefix(settings)
            name = mount.blueprint.name
            if name in app.blueprints:  # one blueprint at a second prefix registers under a name of its own
                name = f"{name}_{len(mounted)}"
            app.register_blueprint(mount.blueprint, url_prefix=prefix, name=name)
            mounted.append((prefix.rstrip("/"), mount))
            if declared in adapters and mount is declared.mounts[0]:  # where its marketplace calls
                marketplace_roots.add(prefix.rstrip("/") or "/")
    mounted.sort(key=lambda item: len(item[0]), reverse=True)  # the longest prefix owns a path
    app.extensions["isvserver.body_limits"] = tuple(
        (prefix, mount.max_body_bytes) for prefix, mount in mounted if mount.max_body_bytes is not None
    )
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(openapi.bp)

    def owner(path: str, method: str) -> Mount | None:
        """The mount that owns `method` on `path` (longest prefix first), else the one that owns the path."""
        for prefix, mount in mounted:
            if mount.owns(prefix, path, method):
                return mount
        for prefix, mount in mounted:
            if mount.owns(prefix, path, None):
                return mount
        return None

    def reads(arrival: lanes.Arrival) -> bool:
        """Whether a request only reads: its mount's word, else its method's."""
        mount = owner(arrival.path.rstrip("/"), arrival.method)
        judge = mount.reads if mount is not None and mount.reads is not None else lanes.safe_method
        return judge(arrival)

    app.extensions[lanes.EXTENSION] = reads

    def answer(status: int, message: str) -> Response:
        if request.method == "HEAD":  # no body goes out, so there is nothing to sign
            return Response(status=status)
        mount = owner(request.path, request.method)
        if mount is not None and mount.error_response is not None:
            try:
                return mount.error_response(status, message)
            except Exception:  # its answer needs what failed (the database, a key): the plain one
                logging.getLogger("isvserver").exception("error answer failed status=%d", status)
                status = 500
        extra = {}
        roots = marketplace_roots
        if status == 404 and roots and mount is None:  # a new user's wrong URL: say where the calls go
            endpoints = ", ".join(sorted(p for p in roots if not any(p.startswith(r + "/") for r in roots)))
            extra["hint"] = f"the marketplace calls POST {endpoints} (its path is ISV_PRODUCE_PATH)"
        response = jsonify(error=message, status=status, **extra)
        response.status_code = status
        return response

    @app.before_request
    def assign_request_id() -> None:
        """Every request gets an id: in its log lines, its call-log row and the X-Request-Id header."""
        g.request_id = uuid.uuid4().hex

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        """405, 413, 404…: the owning mount's answer on its paths, plain JSON elsewhere."""
        response = answer(exc.code or 500, (exc.name or "error").lower())
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        """Anything unhandled answers as its mount answers a 500, never with a stack trace."""
        logging.getLogger("isvserver").exception("unhandled error")
        return answer(500, "internal error; the call can be retried")

    return app
