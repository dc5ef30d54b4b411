"""Hostile traffic against `isvserver serve` (issue 13 A): what it costs the signed calls, memory, disk.

    .venv/bin/python bench/hostile_traffic.py lying-chunked [--count 48] [--hold 30]
    .venv/bin/python bench/hostile_traffic.py idle [--count 10000] [--sources 100] [--hold 30]
    .venv/bin/python bench/hostile_traffic.py oversized [--count 600] [--hold 20]
    .venv/bin/python bench/hostile_traffic.py junk [--calls 10000] [--sources 100]

Each starts `isvserver serve` (production mode, SQLite in a temp dir, the shipped gunicorn
configuration, 3 workers) on loopback, and:

- lying-chunked: holds COUNT connections whose chunked body lies (a chunk shorter than its size, a
  size of 7fffffffffffffff, bytes after the body, a size that is not hex), each opened again when the
  server closes it, while a signed newInstance goes every 0.25 s; prints the calls' latencies and how
  soon each kind was answered.
- idle: holds COUNT connections that send nothing, from SOURCES loopback addresses (127.0.1.x), each
  opened again when dropped, while the signed calls go; prints their latencies.
- oversized: holds COUNT connections that announce a 1 MiB body and send it as fast as the server takes
  it (half with Content-Length, half chunked), opened again when answered; prints the workers' memory
  before and at most during.
- junk: sends CALLS bad-signature calls from SOURCES addresses (X-Forwarded-For), waits for the job
  consumer's summary lines, and prints the growth of the database and of the log (the app's lines and
  the access log apart).

The open-files limit of this process is raised as far as its hard limit allows. Loopback only; every
run is bounded in connections and time.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import resource
import selectors
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.harness import base_env  # noqa: E402
from support.server import (  # noqa: E402
    PRODUCE_PATH,
    Server,
    http_request,
    live_processes,
    running_server,
    subprocess_env,
)
from support.slow_clients import TimedCall, percentile, timed_calls  # noqa: E402

MIB = 1024 * 1024
REOPEN_PER_S = 3000  # at most this many connections opened again a second (loopback ports are few)


def raise_files_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


def _head(framing: str) -> bytes:
    target = f"{PRODUCE_PATH}?signature={'A' * 64}&timestamp={int(time.time() * 1000)}&nonce={'B' * 32}"
    return (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    ).encode()


LYING: dict[str, Callable[[], bytes]] = {
    "short chunk": lambda: _head("Transfer-Encoding: chunked") + b"10\r\nab\r\n\r\n",
    "huge chunk size": lambda: _head("Transfer-Encoding: chunked") + b"7fffffffffffffff\r\nab\r\n\r\n",
    "bytes after the body": lambda: (
        _head("Transfer-Encoding: chunked") + b"2\r\n{}\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    "size not hex": lambda: _head("Transfer-Encoding: chunked") + b"zz\r\n{}\r\n0\r\n\r\n",
}


def _oversized(chunked: bool) -> bytes:
    if chunked:
        return (
            _head("Transfer-Encoding: chunked") + (b"10000\r\n" + b"x" * 65536 + b"\r\n") * 16 + b"0\r\n\r\n"
        )
    return _head(f"Content-Length: {MIB}") + b"x" * MIB


@dataclass
class _Conn:
    kind: str
    sock: socket.socket
    script: bytes
    sent_at: float = 0.0
    connected: bool = False


@dataclass
class Holder:
    """COUNT connections of the given kinds (a script each: bytes sent at once, b"" for none), each
    opened again when the server closes it, held for HOLD seconds in one thread."""

    port: int
    scripts: dict[str, Callable[[], bytes]]
    count: int
    hold_s: float
    sources: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    opened: Counter[str] = field(default_factory=Counter)
    closed_by_server: Counter[str] = field(default_factory=Counter)
    answers: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    answer_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: Counter[str] = field(default_factory=Counter)
    held_min: int = 0
    _open: dict[int, _Conn] = field(default_factory=dict)
    _n: int = 0

    def run(self, ready: threading.Event) -> None:
        self.selector = selectors.DefaultSelector()
        kinds = list(self.scripts)
        for i in range(self.count):
            self._open_one(kinds[i % len(kinds)])
        ready.set()
        end = time.monotonic() + self.hold_s
        self.held_min = self.count
        reopen: list[str] = []
        budget, tick = REOPEN_PER_S / 10, time.monotonic()
        while time.monotonic() < end:
            for key, events in self.selector.select(0.1):
                conn = key.data
                if not conn.connected and events & selectors.EVENT_WRITE:
                    self._connected(conn)
                elif events & selectors.EVENT_WRITE:
                    self._send(conn)
                if events & selectors.EVENT_READ:
                    kind = self._read(conn)
                    if kind:
                        reopen.append(kind)
            if time.monotonic() - tick >= 0.1:
                tick, budget = time.monotonic(), REOPEN_PER_S / 10
                self.held_min = min(self.held_min, len(self._open))
            while reopen and budget > 0:
                self._open_one(reopen.pop())
                budget -= 1
        for conn in list(self._open.values()):
            self._close(conn)
        self.selector.close()

    def _open_one(self, kind: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        self._n += 1
        try:
            sock.bind((self.sources[self._n % len(self.sources)], 0))
            code = sock.connect_ex(("127.0.0.1", self.port))
        except OSError as exc:
            code = exc.errno
        if code not in (0, errno.EINPROGRESS):
            self.failures[errno.errorcode.get(code, str(code))] += 1
            sock.close()
            return
        conn = _Conn(kind, sock, self.scripts[kind]())
        self._open[sock.fileno()] = conn
        self.opened[kind] += 1
        self.selector.register(sock, selectors.EVENT_WRITE | selectors.EVENT_READ, conn)

    def _connected(self, conn: _Conn) -> None:
        if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.failures["connect"] += 1
            self._close(conn)
            return
        conn.connected = True
        conn.sent_at = time.monotonic()
        self._send(conn)

    def _send(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.script) if conn.script else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            return
        conn.script = conn.script[sent:]
        if not conn.script:
            self.selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Conn) -> str | None:
        """The kind to open again once the server closed this connection."""
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
            self.answers[conn.kind]["reset"] += 1
        if data:
            if data.startswith(b"HTTP/1.1 ") and conn.sent_at:
                status = data[9:12].decode(errors="replace")
                if status != "100":
                    self.answers[conn.kind][status] += 1
                    self.answer_s[conn.kind].append(time.monotonic() - conn.sent_at)
                    conn.sent_at = 0.0
            return None
        self.closed_by_server[conn.kind] += 1
        self._close(conn)
        return conn.kind

    def _close(self, conn: _Conn) -> None:
        self._open.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        conn.sock.close()


def workers_of(master: int) -> set[int]:
    """The gunicorn master's worker processes (not the job consumer)."""
    pids = set()
    for pid, _, fields in live_processes():
        if int(fields[1]) == master:
            with contextlib.suppress(OSError):
                if b"--supervised" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.add(pid)
    return pids


def rss_bytes(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


@contextlib.contextmanager
def server(work: Path, **settings: str) -> Iterator[Server]:
    url = f"sqlite:///{work / 'isvserver.sqlite3'}"
    env = subprocess_env(base_env(work, url, **settings))
    with running_server(env, work / "server.log", cwd=work, workers=3) as running:
        yield running


def hold_while_calling(
    srv: Server, holder: Holder, sample: Callable[[], None] | None = None
) -> list[TimedCall]:
    """Hold the connections and send signed calls meanwhile; the calls."""
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=holder.run, args=(ready,), daemon=True)
    thread.start()
    ready.wait(120)
    calls: list[TimedCall] = []
    caller = threading.Thread(target=lambda: calls.extend(timed_calls(srv, stop)), daemon=True)
    caller.start()
    while thread.is_alive():
        if sample:
            sample()
        thread.join(0.5)
    stop.set()
    caller.join(60)
    return calls


def print_calls(calls: list[TimedCall]) -> None:
    seconds = [c.seconds for c in calls]
    wrong = [c for c in calls if not (c.status == 200 and c.signed_ok and c.code in ("000000", "000004"))]
    print(
        f"signed calls: {len(calls)}, p50 {percentile(seconds, 0.5):.3f} s, "
        f"p99 {percentile(seconds, 0.99):.3f} s, "
        f"max {max(seconds, default=0):.3f} s; over 1 s: {sum(s > 1.0 for s in seconds)}; "
        f"not a signed 000000: {len(wrong)}"
    )


def print_holder(holder: Holder) -> None:
    print(f"connections opened {dict(holder.opened)}; closed by the server {dict(holder.closed_by_server)}")
    print(f"fewest held at once: {holder.held_min} of {holder.count}; failures {dict(holder.failures)}")
    for kind in holder.scripts:
        times = holder.answer_s.get(kind, [])
        answered = dict(holder.answers.get(kind, {}))
        if times:
            print(
                f"  {kind}: answers {answered}, "
                f"after p50 {percentile(times, 0.5):.3f} s, max {max(times):.3f} s"
            )
        elif answered:
            print(f"  {kind}: answers {answered}")


def lying_chunked(args: argparse.Namespace, work: Path) -> None:
    with server(work) as srv:
        holder = Holder(srv.port, LYING, args.count, args.hold)
        calls = hold_while_calling(srv, holder)
    print(f"{args.count} lying chunked connections held {args.hold:.0f} s (opened again when closed)")
    print_holder(holder)
    print_calls(calls)


def idle(args: argparse.Namespace, work: Path) -> None:
    sources = [f"127.0.1.{i}" for i in range(1, args.sources + 1)]
    with server(work) as srv:
        holder = Holder(srv.port, {"idle": lambda: b""}, args.count, args.hold, sources=sources)
        calls = hold_while_calling(srv, holder)
    print(
        f"{args.count} idle connections from {args.sources} sources held {args.hold:.0f} s "
        "(opened again when dropped)"
    )
    print_holder(holder)
    print_calls(calls)


def oversized(args: argparse.Namespace, work: Path) -> None:
    scripts = {"Content-Length 1 MiB": lambda: _oversized(False), "chunked 1 MiB": lambda: _oversized(True)}
    with server(work) as srv:
        pids = workers_of(srv.pid)
        time.sleep(2.0)  # the workers settle after start-up
        before = rss_bytes(pids)
        peak = [before]
        holder = Holder(srv.port, scripts, args.count, args.hold)
        calls = hold_while_calling(srv, holder, sample=lambda: peak.append(rss_bytes(pids)))
    print(
        f"{args.count} connections announcing 1 MiB bodies held {args.hold:.0f} s "
        "(opened again when answered)"
    )
    print_holder(holder)
    print_calls(calls)
    grown = max(peak) - before
    print(f"workers' memory (RSS, 3 workers): {before / MIB:.1f} MiB before, "
          f"at most {max(peak) / MIB:.1f} MiB during: +{grown / MIB:.1f} MiB")  # fmt: skip


def _log_bytes(text: str) -> tuple[int, int, int]:
    """(access-log bytes, app bytes, summary lines) of JSON log lines."""
    access = app = summaries = 0
    for line in text.splitlines(keepends=True):
        try:
            entry = json.loads(line)
        except ValueError:  # gunicorn's access lines are text: `127.0.0.1 "POST /p HTTP/1.1" 200 …`
            if ' "' in line and "request_id=" in line:
                access += len(line.encode())
            else:
                app += len(line.encode())
            continue
        if entry.get("logger") == "gunicorn.access":
            access += len(line.encode())
        else:
            app += len(line.encode())
            summaries += "rejected calls only counted" in str(entry.get("message"))
    return access, app, summaries


def _database_bytes(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def junk(args: argparse.Namespace, work: Path) -> None:
    path = work / "isvserver.sqlite3"
    body = json.dumps({"activity": "newInstance", "orderId": "x" * 64, "instanceId": "i" * 64}).encode()
    with server(work) as srv:
        db_before, log_before = _database_bytes(path), len(srv.read_log())

        def send(i: int) -> int:
            target = f"{PRODUCE_PATH}?signature={'A' * 64}&timestamp={int(time.time() * 1000)}&nonce=n{i}"
            source = {"X-Forwarded-For": f"198.51.100.{i % args.sources + 1}"}
            return http_request(srv.base, "POST", target, body, source).status

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(send, range(args.calls)))
        seconds = time.monotonic() - started
        last_minute = int(time.time() // 60)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:  # the consumer summarizes a minute once it has ended
            with sqlite3.connect(path) as conn:
                left = conn.execute(
                    "SELECT COUNT(*) FROM rejected_call_count WHERE minute <= ? AND calls > stored "
                    "AND summarized = 0",
                    (last_minute,),
                ).fetchone()[0]
            if not left:
                break
            time.sleep(2.0)
        time.sleep(1.0)  # the consumer's lines reach the log file
        grown_db = _database_bytes(path) - db_before
        access, app, summaries = _log_bytes(srv.read_log()[log_before:])
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM callback_log").fetchone()[0]
        counted = conn.execute("SELECT SUM(calls) FROM rejected_call_count").fetchone()[0]
    sent = len(statuses)
    print(f"{sent} bad-signature calls from {args.sources} sources in {seconds:.1f} s; all HTTP 200: "
          f"{all(s == 200 for s in statuses)}; summarized: {not left}")  # fmt: skip
    print(f"callback_log rows: {rows}; rejected calls counted: {counted}; summary lines: {summaries}")
    print(f"database growth: {grown_db / 1e6:.3f} MB")
    print(f"log growth: app {app / 1e6:.3f} MB, access log {access / 1e6:.3f} MB (ISV_ACCESS_LOG=0 drops it)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="scenario", required=True)
    p = sub.add_parser("lying-chunked")
    p.add_argument("--count", type=int, default=48)
    p.add_argument("--hold", type=float, default=30.0)
    p = sub.add_parser("idle")
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--sources", type=int, default=100)
    p.add_argument("--hold", type=float, default=30.0)
    p = sub.add_parser("oversized")
    p.add_argument("--count", type=int, default=600)
    p.add_argument("--hold", type=float, default=20.0)
    p = sub.add_parser("junk")
    p.add_argument("--calls", type=int, default=10_000)
    p.add_argument("--sources", type=int, default=100)
    args = parser.parse_args()
    for name in ("count", "hold", "calls", "sources"):
        value = getattr(args, name, None)
        if value is not None and not 0 < value <= 20_000:
            parser.error(f"--{name} must be between 1 and 20000")
    files = raise_files_limit(getattr(args, "count", 0) + 1024)
    if getattr(args, "count", 0) + 256 > files:
        print(f"only {files} open files allowed here; --count {args.count} needs more", file=sys.stderr)
        return 1
    print(f"load average before: {Path('/proc/loadavg').read_text().split()[:3]}")
    with tempfile.TemporaryDirectory(prefix="isv-hostile-") as tmp:
        {"lying-chunked": lying_chunked, "idle": idle, "oversized": oversized, "junk": junk}[args.scenario](
            args, Path(tmp)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
