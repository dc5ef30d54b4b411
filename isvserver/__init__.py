"""isvserver: the server an ISV runs so that a cloud marketplace can sell its SaaS."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from flask import Flask, Response, g
from werkzeug.exceptions import HTTPException

from isvserver import db, files, health, logs, metrics, openapi
from isvserver.provisioning import Provisioner
from isvserver.settings import Settings, load_settings


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("isvserver")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
        )
        logger.addHandler(handler)
        logger.propagate = False


def create_app(
    settings: Settings | None = None,
    provisioner: Provisioner | None = None,
    clock: Callable[[], float] | None = None,
) -> Flask:
    """Build the WSGI app; opens no database connection (each request opens its own)."""
    from isvserver.jobs import Jobs
    from isvserver.marketplaces.koogallery.views import bp as koogallery_bp
    from isvserver.marketplaces.koogallery.views import envelope
    from isvserver.provisioning.loader import load_provisioner
    from isvserver.results import INTERNAL_ERROR, INVALID_PARAMETERS
    from isvserver.runtime import Runtime, wall_clock_ms

    settings = settings or load_settings()
    logs.configure(settings.log_level, settings.log_format)
    app = Flask(__name__, instance_path=str(settings.instance_dir))
    files.private_dir(settings.instance_dir)  # 0700: keys, databases, queue and metrics live there
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1  # see views._read_body
    provisioner = provisioner or load_provisioner(settings)
    jobs = Jobs(settings, provisioner)
    app.extensions["isvserver"] = Runtime(settings, provisioner, jobs, clock or wall_clock_ms)
    db.bind(settings.database_url)
    app.register_blueprint(koogallery_bp, url_prefix=settings.produce_path)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(openapi.bp)

    @app.before_request
    def assign_request_id() -> None:
        """Every request gets an id: in its log lines, its callback_log row and the X-Request-Id header."""
        g.request_id = uuid.uuid4().hex

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        """405, 413, 404…: the signed JSON envelope, with the HTTP status the error calls for."""
        status = exc.code or 500
        code = INTERNAL_ERROR if status >= 500 else INVALID_PARAMETERS
        response = envelope(status, code, (exc.name or "error").lower())
        if status == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        """Anything unhandled still answers a signed 000005 with HTTP 200, never a stack trace."""
        logging.getLogger("isvserver").exception("unhandled error")
        return envelope(200, INTERNAL_ERROR, "internal error; the call can be retried")

    return app
