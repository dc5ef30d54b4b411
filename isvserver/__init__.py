"""isvserver: the server an ISV runs so that a cloud marketplace can sell its SaaS."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from isvserver import db, files, logs
from isvserver.adapters import Adapter
from isvserver.provisioning import Provisioner
from isvserver.settings import Settings, load_settings
from isvserver.web import health, metrics, openapi


def create_app(
    settings: Settings | None = None,
    provisioner: Provisioner | None = None,
    clock: Callable[[], float] | None = None,
) -> Flask:
    """Build the WSGI app; opens no database connection (each request opens its own)."""
    from isvserver.adapters import load_all
    from isvserver.jobs import Jobs
    from isvserver.lifecycle import Lifecycle, register_event_types
    from isvserver.provisioning.loader import load_provisioner
    from isvserver.runtime import Runtime, wall_clock_ms

    settings = settings or load_settings()
    logs.configure(settings.log_level, settings.log_format)
    app = Flask(__name__, instance_path=str(settings.instance_dir))
    files.private_dir(settings.instance_dir)  # 0700: keys, databases, queue and metrics live there
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1  # see calls.read_body
    # No route answers OPTIONS by itself: on an adapter's paths it is a 405 in the adapter's terms.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    adapters = load_all(settings.marketplaces)
    for adapter in adapters:
        register_event_types(dict(adapter.event_types))
    provisioner = provisioner or load_provisioner(settings)
    jobs = Jobs(settings, provisioner)
    for adapter in adapters:
        if adapter.init_jobs is not None:
            adapter.init_jobs(jobs)
    lifecycle = Lifecycle(provisioner, jobs, settings.data_key)
    app.extensions["isvserver"] = Runtime(settings, provisioner, jobs, lifecycle, clock or wall_clock_ms)
    db.bind(settings.database_url)
    prefixes = []
    for adapter in adapters:
        prefix = adapter.url_prefix(settings)
        app.register_blueprint(adapter.blueprint, url_prefix=prefix)
        prefixes.append((prefix.rstrip("/"), adapter))
    prefixes.sort(key=lambda item: len(item[0]), reverse=True)  # the longest prefix owns a path
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(openapi.bp)

    def owner(path: str) -> Adapter | None:
        """The adapter whose URL prefix holds `path`."""
        for prefix, adapter in prefixes:
            if path == prefix or path.startswith(prefix + "/") or not prefix:
                return adapter
        return None

    def answer(status: int, message: str) -> Response:
        if request.method == "HEAD":  # no body goes out, so there is nothing to sign
            return Response(status=status)
        adapter = owner(request.path)
        if adapter is not None and adapter.error_response is not None:
            return adapter.error_response(status, message)
        response = jsonify(error=message, status=status)
        response.status_code = status
        return response

    @app.before_request
    def assign_request_id() -> None:
        """Every request gets an id: in its log lines, its call-log row and the X-Request-Id header."""
        g.request_id = uuid.uuid4().hex

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        """405, 413, 404…: the adapter's signed envelope under its prefix, plain JSON elsewhere."""
        response = answer(exc.code or 500, (exc.name or "error").lower())
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        """Anything unhandled still answers (an adapter's with HTTP 200), never with a stack trace."""
        logging.getLogger("isvserver").exception("unhandled error")
        adapter = owner(request.path)
        if adapter is not None and adapter.error_response is not None:
            return adapter.error_response(200, "internal error; the call can be retried")
        return answer(500, "internal error")

    return app
