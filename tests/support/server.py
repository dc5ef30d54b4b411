"""End-to-end helpers: a real `isvserver serve` (gunicorn master + workers) on a free loopback port.

Everything here talks to isvserver the way the marketplace and an operator do: over HTTP, through
the `isvserver` command, and by looking at the database and the server log afterwards. Requests are
signed with a small independent implementation of spec §2.1 and §3, not with isvserver's own code.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import random
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import psycopg
import pytest

from support.harness import ACCESS_KEY

BIN_DIR = Path(sys.executable).parent
ISVSERVER = str(BIN_DIR / "isvserver")
PRODUCE_PATH = "/saasproduce"
STARTUP_TIMEOUT_S = 30.0
GRACEFUL_STOP_S = 15.0
CLI_TIMEOUT_S = 60.0
_PORT_RANGE = (20000, 32000)  # below Linux's ephemeral range: client sockets never take it meanwhile


# --- processes ----------------------------------------------------------------------------------


def subprocess_env(isv: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any inherited ISV_* variable, plus `isv`; no settings file
    unless `isv` names one (a developer's ./isvserver.env must not change what a test runs with)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISV_")}
    env["PYTHONUNBUFFERED"] = "1"
    if Path("isvserver.env").exists():
        env["ISV_SETTINGS_FILE"] = ""
    env.update(isv or {})
    return env


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now."""
    for _ in range(200):
        port = random.randrange(*_PORT_RANGE)
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1")


def is_listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _has_exited(pid: int) -> bool:
    """Whether our child `pid` has exited, without reaping it (its pid and group stay reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def live_processes() -> Iterator[tuple[int, str, list[str]]]:
    """(pid, command, stat fields after the command) of every live process (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] not in ("Z", "X"):
            yield int(stat.parent.name), text[text.find("(") + 1 : text.rfind(")")], fields


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds passed; whether it held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def is_job_consumer(pid: int) -> bool:
    """Whether `pid` is an `isvserver worker` that a gunicorn master started beside its workers."""
    try:
        return b"--supervised" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def job_consumers(master: int) -> set[int]:
    """The live job consumers started by the gunicorn master `master`."""
    return {pid for pid, _, fields in live_processes() if int(fields[1]) == master and is_job_consumer(pid)}


def live_group_members(pgid: int) -> list[str]:
    """`pid command` of every process of group `pgid` that is still alive (zombies do not count)."""
    return [f"{pid} {command}" for pid, command, fields in live_processes() if int(fields[2]) == pgid]


def stop_group(process: subprocess.Popen[Any], graceful: bool = True) -> None:
    """SIGTERM the group leader, give it time to stop its workers, then SIGKILL whatever is left
    (at once when not `graceful`: gunicorn ignores SIGTERM while it is still trying to bind).

    Raises AssertionError if a process of the group is still alive at the end.
    """
    pgid = process.pid  # started with start_new_session=True: it leads its own group
    if graceful and process.returncode is None and not _has_exited(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACEFUL_STOP_S
        while not _has_exited(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    # The leader is not reaped yet, so the group id cannot have been reused: safe to signal it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while live_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    leftover = live_group_members(pgid)
    assert not leftover, f"processes outlived their test: {leftover}"


@contextlib.contextmanager
def serving_in_process(env: Mapping[str, str]) -> Iterator[str]:
    """The app of `env` on werkzeug's threaded server in this process, for the block: its produce URL
    (the CLI's simulators measured for coverage, in-process)."""
    from werkzeug.serving import make_server

    from isvserver import create_app, db
    from isvserver.settings import load_settings

    server = make_server("127.0.0.1", 0, create_app(load_settings(dict(env))), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{PRODUCE_PATH}"
    finally:
        server.shutdown()
        thread.join(10)
        db.close_all()


@contextlib.contextmanager
def running_gunicorn(
    app: str, chdir: Path, log: Path, env: Mapping[str, str], *options: str
) -> Iterator[str]:
    """`gunicorn --chdir CHDIR APP OPTIONS` (an example product, a test's own app) on a free loopback
    port for the block, its output in `log`: its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--chdir", str(chdir), app, "--bind", f"127.0.0.1:{port}"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, *options],
            env=dict(env),
            cwd=log.parent,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        assert wait_until(lambda: is_listening(port), 20), log.read_text(errors="replace")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(process)


@dataclass
class CliResult:
    """A finished `isvserver` command."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr together."""
        return self.stdout + self.stderr

    def describe(self) -> str:
        """For assertion messages."""
        return f"$ isvserver {' '.join(self.args)}\nexit {self.returncode}\n{self.output}"


def run_cli(
    *args: str,
    env: Mapping[str, str],
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = CLI_TIMEOUT_S,
) -> CliResult:
    """Run `isvserver ARGS` to completion in its own process group (killed whole on timeout)."""
    process = subprocess.Popen(
        [ISVSERVER, *args],
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"isvserver {' '.join(args)} did not finish in {timeout} s:\n{stdout}{stderr}")
    finally:
        if process.returncode is None:
            stop_group(process)
    return CliResult(list(args), process.returncode, stdout, stderr)


# --- the server ---------------------------------------------------------------------------------


@dataclass
class Server:
    """A running `isvserver serve`."""

    base: str  # http://127.0.0.1:PORT
    url: str  # the produce URL
    env: dict[str, str] = field(repr=False)  # the whole environment it runs with
    log_path: Path  # its stdout and stderr (gunicorn's access and error logs, the app's log)
    pid: int  # the gunicorn master
    port: int

    @property
    def database_url(self) -> str:
        """The database it uses."""
        return self.env["ISV_DATABASE_URL"]

    def read_log(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_bytes().decode("utf-8", errors="replace")

    def wait_for_log(self, ready: Callable[[str], bool], timeout: float = 10.0) -> str:
        """The log once `ready(log)` holds (gunicorn writes an access line after sending the reply),
        or as it is after `timeout`."""
        deadline = time.monotonic() + timeout
        log = self.read_log()
        while not ready(log) and time.monotonic() < deadline:
            time.sleep(0.05)
            log = self.read_log()
        return log

    def log_entries(self, logger: str | None = None) -> list[dict[str, Any]]:
        """The server's JSON log lines (optionally of one logger), parsed, in order."""
        entries = []
        for line in self.read_log().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if logger is None or entry["logger"] == logger:
                    entries.append(entry)
        return entries

    def call_pids(self, marker: str = "") -> list[int]:
        """The worker pid of every isvserver.calls line (containing `marker`), in log order."""
        return [entry["pid"] for entry in self.log_entries("isvserver.calls") if marker in entry["message"]]


def _log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_bytes().decode("utf-8", errors="replace").splitlines()[-lines:])


def _healthz(base: str) -> int | None:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def _wait_until_up(
    process: subprocess.Popen[Any], base: str, log_path: Path, log_offset: int, deadline: float, workers: int
) -> str:
    """'up' (every worker has loaded the app), 'port-taken' or 'down' (exited or too slow), judged from
    the log after `log_offset`."""
    listening = f"Listening at: {base} ({process.pid})"
    while time.monotonic() < deadline:
        log = log_path.read_bytes()[log_offset:].decode("utf-8", errors="replace")
        if "Connection in use" in log:
            return "port-taken"
        if _has_exited(process.pid):
            return "down"
        # The log line proves that *our* master holds the port, the 200 that a worker answers.
        if listening in log and log.count("Worker ready (pid: ") >= workers and _healthz(base) == 200:
            return "up"
        time.sleep(0.1)
    return "down"


@contextlib.contextmanager
def running_server(
    env: Mapping[str, str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    workers: int = 3,
    stdout_path: Path | None = None,
    timeout: float = STARTUP_TIMEOUT_S,
    serve_args: tuple[str, ...] = (),
    executable: str = ISVSERVER,
) -> Iterator[Server]:
    """`isvserver serve --bind 127.0.0.1:PORT --workers N` until the block ends; fails with the log's
    tail if /healthz does not answer 200 within `timeout`. Output goes to `log_path` (stdout to
    `stdout_path` instead, if given); `serve_args` go to `isvserver serve` too, `executable` is the
    `isvserver` to run (default: this venv's). No process of the server outlives the block."""
    deadline = time.monotonic() + timeout
    for attempt in range(3):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        with contextlib.ExitStack() as files:
            log = files.enter_context(log_path.open("ab"))
            out = files.enter_context(stdout_path.open("ab")) if stdout_path else log
            process = subprocess.Popen(
                [executable, "serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers), *serve_args],
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                start_new_session=True,
            )
        try:
            state = _wait_until_up(process, base, log_path, log_offset, deadline, workers)
        except BaseException:
            stop_group(process, graceful=False)
            raise
        if state == "up":
            break
        stop_group(process, graceful=False)
        if state != "port-taken" or attempt == 2:
            pytest.fail(
                f"isvserver did not come up on {base} (exit {process.returncode}):\n{_log_tail(log_path)}"
            )
    server = Server(base, base + PRODUCE_PATH, dict(env), log_path, process.pid, port)
    try:
        yield server
    finally:
        stop_group(process)


def _hmac(key: str, data: bytes) -> bytes:
    return hmac.new(key.encode("utf-8"), data, hashlib.sha256).digest()


def request_signature(key: str, payload: bytes, nonce: str, timestamp: str) -> str:
    """hex(HMAC(key, key + nonce + timestamp + lowerhex(HMAC(key, payload)))), upper-case."""
    inner = _hmac(key, payload).hex()
    return _hmac(key, (key + nonce + timestamp + inner).encode("utf-8")).hex().upper()


def expected_body_sign(key: str, raw: bytes) -> str:
    """The exact Body-Sign header value for a reply body."""
    signature = base64.b64encode(_hmac(key, raw)).decode("ascii")
    return f'sign_type="HMAC-SHA256", signature="{signature}"'


def encode(body: dict[str, Any]) -> bytes:
    """A body as the marketplace sends it: keys sorted, compact, raw UTF-8."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass
class Signed:
    """The query parameters of one signed call."""

    signature: str
    timestamp: str
    nonce: str

    @property
    def query(self) -> str:
        return urlencode({"signature": self.signature, "timestamp": self.timestamp, "nonce": self.nonce})


def sign(key: str, payload: bytes) -> Signed:
    """Fresh timestamp (ms) and nonce (64 upper-hex), and the signature over them."""
    timestamp = str(int(time.time() * 1000))
    nonce = secrets.token_hex(32).upper()
    return Signed(request_signature(key, payload, nonce, timestamp), timestamp, nonce)


@dataclass
class Reply:
    """A raw HTTP reply."""

    status: int
    headers: http.client.HTTPMessage
    raw: bytes

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def body_sign(self) -> str | None:
        return self.headers.get("Body-Sign")

    @property
    def json(self) -> dict[str, Any]:
        value = json.loads(self.raw)
        assert isinstance(value, dict), self.raw
        return value

    def signed_by(self, key: str) -> bool:
        """Whether Body-Sign is exactly the HMAC of these bytes with `key`."""
        return self.body_sign == expected_body_sign(key, self.raw)


def http_request(
    base: str,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    chunked: bool = False,
    timeout: float = 30.0,
) -> Reply:
    """One request on a fresh connection; `chunked` sends the body with Transfer-Encoding: chunked."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        all_headers = {"Content-Type": "application/json;charset=utf8", "Accept": "application/json"}
        all_headers.update(headers or {})
        if chunked and body is not None:
            pieces = [body[i : i + 1000] for i in range(0, len(body), 1000)]
            all_headers["Transfer-Encoding"] = "chunked"
            conn.request(method, target, body=iter(pieces), headers=all_headers, encode_chunked=True)
        else:
            conn.request(method, target, body=body, headers=all_headers)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def post_signed(
    server: Server, body: dict[str, Any] | bytes, key: str = ACCESS_KEY, signed: Signed | None = None
) -> tuple[Reply, Signed]:
    """POST a signed call to the produce URL; the reply and the query parameters used."""
    raw = body if isinstance(body, bytes) else encode(body)
    signed = signed or sign(key, raw)
    return http_request(server.base, "POST", f"{PRODUCE_PATH}?{signed.query}", raw), signed


# --- the database -------------------------------------------------------------------------------


def db_rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of `sql` (placeholders written `?`) read straight from the database behind `url`."""
    if url.startswith("sqlite:///"):
        path = unquote(url[len("sqlite:///") :])
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
            return conn.execute(sql, params).fetchall()
    with psycopg.connect(url, connect_timeout=10) as conn:
        return conn.execute(sql.replace("?", "%s"), params).fetchall()


def db_count(url: str, table: str, where: str = "1 = 1", params: tuple[Any, ...] = ()) -> int:
    """How many rows of `table` match."""
    return db_rows(url, f"SELECT COUNT(*) FROM {table} WHERE {where}", params)[0][0]  # noqa: S608
