"""The bare Flask JSON route the benchmark compares isvserver with.

Served by the same gunicorn config (config/gunicorn.conf.py) and worker count as isvserver:
`gunicorn -c config/gunicorn.conf.py --pythonpath bench bare_app:app`. It reads the request body and
answers a small JSON object, nothing else: no signature, no database, no callback log.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.post("/saasproduce")
def produce() -> Response:
    """Read the body, answer the shape isvserver answers (without its work)."""
    request.get_data()
    return jsonify(resultCode="000000", resultMsg="success")


@app.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")
