"""Hostile clients on loopback: connections that send nothing, or trickle a request a byte a second.

Used by the fault suite (tests/faults/test_slow_clients.py) and bench/slow_clients.py. One thread
keeps `count` such connections open for `hold_s` seconds: whenever the server closes one, it opens
another of the same kind at once (an attacker keeps the pressure on), so that at every moment
`count` connections are held.
"""

from __future__ import annotations

import contextlib
import http.client
import selectors
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from support.harness import ACCESS_KEY
from support.server import PRODUCE_PATH, Server, post_signed

KINDS = ("idle", "trickle-head", "trickle-body")
TRICKLE_INTERVAL_S = 1.0
CONNECT_TIMEOUT_S = 2.0


def _head(body_length: int) -> bytes:
    """A plausible call's request head, with a query string that looks signed."""
    return (
        f"POST {PRODUCE_PATH}?signature={'A' * 64}&timestamp={int(time.time() * 1000)}&nonce={'B' * 64} "
        f"HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json;charset=utf8\r\n"
        f"Content-Length: {body_length}\r\n\r\n"
    ).encode("ascii")


@dataclass
class _Held:
    kind: str
    sock: socket.socket
    script: bytes  # what it still has to trickle, a byte per tick
    opened: float


@dataclass
class SlowClients:
    """`count` connections to 127.0.0.1:`port`, the kinds of KINDS in turn, held for `hold_s`."""

    port: int
    count: int = 200
    hold_s: float = 60.0
    opened: Counter[str] = field(default_factory=Counter)  # connections opened, by kind
    closed_by_server: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)  # the server sent bytes before closing
    connect_failures: int = 0
    bytes_sent: int = 0
    _held: dict[int, _Held] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: BaseException | None = None

    def start(self) -> None:
        """Open the connections and keep them in a background thread."""
        self._selector = selectors.DefaultSelector()
        for i in range(self.count):
            self._open(KINDS[i % len(KINDS)])
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close every connection and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for held in list(self._held.values()):
            self._close(held)
        self._selector.close()

    def held(self) -> int:
        """Connections open right now."""
        return len(self._held)

    def _open(self, kind: str) -> None:
        sock = socket.socket()
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(("127.0.0.1", self.port))
        except OSError:
            self.connect_failures += 1
            sock.close()
            return
        sock.setblocking(False)
        script = b""
        if kind == "trickle-head":
            script = _head(1000)
        elif kind == "trickle-body":
            with contextlib.suppress(OSError):
                self.bytes_sent += sock.send(_head(1000))
            script = b'{"activity":"newInstance"' + b" " * 975
        held = _Held(kind, sock, script, time.monotonic())
        self._held[sock.fileno()] = held
        self._selector.register(sock, selectors.EVENT_READ, held)
        self.opened[kind] += 1

    def _close(self, held: _Held) -> None:
        self._held.pop(held.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(held.sock)
        held.sock.close()

    def _lost(self, held: _Held, answered: bool) -> None:
        """The server closed `held`: count it and open another of its kind."""
        self.closed_by_server[held.kind] += 1
        if answered:
            self.answered[held.kind] += 1
        self._close(held)
        if not self._stop.is_set():
            self._open(held.kind)

    def _run(self) -> None:
        try:
            deadline = time.monotonic() + self.hold_s
            next_tick = time.monotonic() + TRICKLE_INTERVAL_S
            while not self._stop.is_set() and time.monotonic() < deadline:
                timeout = max(0.0, min(next_tick, deadline) - time.monotonic())
                for key, _ in self._selector.select(timeout):
                    held: _Held = key.data
                    try:
                        data = held.sock.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    self._lost(held, answered=bool(data))
                if time.monotonic() >= next_tick:
                    next_tick += TRICKLE_INTERVAL_S
                    for held in list(self._held.values()):
                        if not held.script:
                            continue
                        try:
                            self.bytes_sent += held.sock.send(held.script[:1])
                        except OSError:
                            self._lost(held, answered=False)
                            continue
                        held.script = held.script[1:]
                missing = self.count - len(self._held)
                for i in range(missing):  # connect failures earlier: try again
                    self._open(KINDS[i % len(KINDS)])
        except BaseException as exc:  # reported by the test
            self.error = exc


@dataclass
class TimedCall:
    """One signed call sent while the slow clients were held."""

    started: float
    seconds: float
    status: int | None
    code: str | None
    signed_ok: bool
    error: str | None = None


def timed_calls(server: Server, stop: threading.Event, interval_s: float = 0.25) -> list[TimedCall]:
    """Signed newInstance calls on fresh connections, one every `interval_s`, until `stop` is set."""
    calls: list[TimedCall] = []
    order_id = f"SLOW{uuid.uuid4().hex[:10].upper()}"
    n = 0
    while not stop.is_set():
        n += 1
        body = {
            "activity": "newInstance",
            "orderId": order_id,
            "orderLineId": f"{order_id}-{n:06d}",
            "businessId": str(uuid.uuid4()),
        }
        started = time.monotonic()
        try:
            reply, _ = post_signed(server, body)
        except (OSError, http.client.HTTPException) as exc:
            calls.append(TimedCall(started, time.monotonic() - started, None, None, False, repr(exc)))
        else:
            code = None
            with contextlib.suppress(ValueError, AssertionError):
                code = reply.json.get("resultCode")
            took = time.monotonic() - started
            calls.append(TimedCall(started, took, reply.status, code, reply.signed_by(ACCESS_KEY)))
        stop.wait(max(0.0, interval_s - (time.monotonic() - started)))
    return calls


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile (0..1) of `values` (nearest rank)."""
    ordered = sorted(values) or [0.0]
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
