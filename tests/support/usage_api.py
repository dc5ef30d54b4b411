"""A local KooGallery usage API (spec §10) on 127.0.0.1, written from the spec, not from our pusher.

`POST /api/mkp-openapi-public/global/v1/isv/usage-data`: headers `ts` (ms), `nonce` (≤ 64, used once) and
`signature` = base64(HMAC-SHA256(basic key, "ts={ts}&nonce={nonce}&body={raw body}")), checked over the
exact bytes received; a body of `usage_records` (1 to 1000) with every field as §10 describes. An upload
taken answers `MKT.0000`. Every record taken is kept in a SQLite file (a restart loses nothing) keyed by
`metering_sn`: the same record again is counted as a duplicate, never billed twice. With
`report_records`, the answer also names per-record problems in `failed_records` (duplicates
`MKT.0409`, another record under a known sn `MKT.0410`), which §10 says the real one leaves to its console.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PATH = "/api/mkp-openapi-public/global/v1/isv/usage-data"
WINDOW_MS = 5 * 60 * 1000
WIRE_TIME = re.compile(r"\d{8}T\d{6}Z")
FIELDS = ("instance_id", "record_time", "begin_time", "end_time", "usage_value", "metering_sn")
SCHEMA = """
CREATE TABLE IF NOT EXISTS record (
    metering_sn TEXT PRIMARY KEY, instance_id TEXT NOT NULL, record_time TEXT NOT NULL,
    begin_time TEXT NOT NULL, end_time TEXT NOT NULL, usage_value TEXT NOT NULL,
    relate_pkg_instance TEXT, times_received INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS upload (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, body_sha256 TEXT NOT NULL,
    records INTEGER NOT NULL, status INTEGER NOT NULL, result_code TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS nonce (nonce TEXT PRIMARY KEY);
"""


class UsageApi(ThreadingHTTPServer):
    """The usage API on a loopback port (a given one to come back on after a stop), state in `db_path`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, db_path: Path, key: str, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.db_path = db_path
        self.key = key
        self.report_records = False
        self.fail_next = 0  # answer this many uploads 503 (a marketplace having trouble)
        # With `hold` set, an upload is taken (stored) and its answer waits until `release` is set:
        # the pusher waits on a taken upload, as when it dies between the marketplace's work and its answer.
        self.hold = threading.Event()
        self.release = threading.Event()
        self.held = 0
        self.lock = threading.Lock()
        with self.db() as conn:
            conn.executescript(SCHEMA)

    @property
    def url(self) -> str:
        """The API's base URL (ISV_MARKET_API_URL)."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    @contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        """A connection to the state file, committed at the end of the block."""
        conn = sqlite3.connect(self.db_path, timeout=10)
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    # --- what tests read ------------------------------------------------------------------------------

    def records(self) -> dict[str, dict[str, Any]]:
        """Every record taken, by metering_sn."""
        with self.db() as conn:
            conn.row_factory = sqlite3.Row
            return {row["metering_sn"]: dict(row) for row in conn.execute("SELECT * FROM record")}

    def uploads(self) -> list[dict[str, Any]]:
        """Every upload received, in order."""
        with self.db() as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute("SELECT * FROM upload ORDER BY id")]


def _invalid(item: Any) -> str | None:
    """Why one usage record does not follow §10 (None when it does)."""
    if not isinstance(item, dict):
        return "a usage record is not an object"
    for name in FIELDS:
        if not isinstance(item.get(name), str) or not item[name]:
            return f"{name} is missing or not a string"
    for name in ("record_time", "begin_time", "end_time"):
        if not WIRE_TIME.fullmatch(item[name]):
            return f"{name} is not yyyyMMdd'T'HHmmss'Z'"
    if item["begin_time"] >= item["end_time"]:
        return "begin_time is not before end_time"
    if len(item["instance_id"]) > 64 or len(item["metering_sn"]) > 64:
        return "instance_id or metering_sn is longer than 64"
    value = item["usage_value"]
    try:
        number = Decimal(value)
    except InvalidOperation:
        return "usage_value is not a number"
    if len(value) > 20 or not number.is_finite() or number <= 0 or number.as_tuple().exponent < -4:
        return "usage_value must be > 0 with at most 4 decimals, at most 20 characters"
    related = item.get("relate_pkg_instance")
    if related is not None and (not isinstance(related, str) or len(related) > 64):
        return "relate_pkg_instance is longer than 64"
    return None


class _Handler(BaseHTTPRequestHandler):
    server: UsageApi

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _signature_failure(self, raw: bytes) -> str | None:
        ts, nonce, signature = (self.headers.get(n) for n in ("ts", "nonce", "signature"))
        if not ts or not nonce or not signature:
            return "ts, nonce and signature headers are required"
        if not ts.isdigit() or abs(time.time() * 1000 - int(ts)) > WINDOW_MS:
            return "ts is not within the window"
        if len(nonce) > 64:
            return "nonce is longer than 64"
        message = b"ts=" + ts.encode() + b"&nonce=" + nonce.encode() + b"&body=" + raw
        expected = base64.b64encode(hmac.new(self.server.key.encode(), message, hashlib.sha256).digest())
        if not hmac.compare_digest(expected, signature.encode("ascii", "replace")):
            return "signature does not match"
        with self.server.db() as conn:
            if conn.execute("INSERT OR IGNORE INTO nonce VALUES (?)", (nonce,)).rowcount == 0:
                return "nonce was used before"
        return None

    def do_POST(self) -> None:
        """One upload."""
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != PATH:
            self._answer(404, {"error_code": "APIG.0101", "error_msg": "The API does not exist"})
            return
        with self.server.lock:
            self._upload(raw)

    def _upload(self, raw: bytes) -> None:
        digest = hashlib.sha256(raw).hexdigest()

        def answer(status: int, code: str, message: str, records: int = 0, **extra: Any) -> None:
            with self.server.db() as conn:
                conn.execute(
                    "INSERT INTO upload (received_at, body_sha256, records, status, result_code) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (time.time(), digest, records, status, code),
                )
            self._answer(status, {"resultCode": code, "resultMsg": message, **extra})

        if self.server.fail_next > 0:
            self.server.fail_next -= 1
            answer(503, "MKT.0199", "service busy, try again later")
            return
        failure = self._signature_failure(raw)
        if failure is not None:
            answer(401, "MKT.0151", f"No authority: {failure}")
            return
        try:
            body = json.loads(raw)
        except ValueError:
            answer(400, "MKT.0100", "body is not JSON")
            return
        items = body.get("usage_records") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= 1000:
            answer(400, "MKT.0100", "usage_records must hold 1 to 1000 records")
            return
        for item in items:
            problem = _invalid(item)
            if problem is not None:
                answer(400, "MKT.0100", f"Failure of input parameter: {problem}")
                return
        failed = []
        with self.server.db() as conn:
            for item in items:
                row = (*(item[name] for name in FIELDS), item.get("relate_pkg_instance"))
                known = conn.execute(
                    "SELECT instance_id, record_time, begin_time, end_time, usage_value, metering_sn, "
                    "relate_pkg_instance FROM record WHERE metering_sn = ?",
                    (item["metering_sn"],),
                ).fetchone()
                if known is None:
                    conn.execute(
                        "INSERT INTO record (instance_id, record_time, begin_time, end_time, usage_value, "
                        "metering_sn, relate_pkg_instance, times_received) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                        row,
                    )
                    continue
                conn.execute(
                    "UPDATE record SET times_received = times_received + 1 WHERE metering_sn = ?",
                    (item["metering_sn"],),
                )
                same = tuple(known) == row
                failed.append(
                    {
                        "metering_sn": item["metering_sn"],
                        "error_code": "MKT.0409" if same else "MKT.0410",
                        "error_msg": "metering_sn was received before"
                        if same
                        else "metering_sn was received before with another record",
                    }
                )
        extra = {"failed_records": failed} if self.server.report_records and failed else {}
        if self.server.hold.is_set():
            self.server.held += 1
            self.server.lock.release()  # others may call meanwhile
            try:
                self.server.release.wait(60)
            finally:
                self.server.lock.acquire()
        answer(200, "MKT.0000", "Success", len(items), **extra)


@contextmanager
def serving(db_path: Path, key: str, port: int = 0) -> Iterator[UsageApi]:
    """The usage API serving in a thread for the block."""
    server = UsageApi(db_path, key, port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
