"""A gunicorn worker that slow, idle or lying clients cannot starve: a request reaches a thread only whole.

gunicorn's own `gthread` worker hands every new connection to a thread at once and reads the request
with blocking calls in that thread, so that clients that send nothing, trickle a request a byte at a
time, or announce more body than they send, hold every thread. This worker keeps each new connection
in the worker's event loop and frames its request there with h11 (a well-kept HTTP/1.1 parser), reading
what arrives without blocking, until the request head and its body are complete; only then does a
thread parse and answer it, from the bytes already read (the thread never reads the socket).

What a connection may hold, per worker:
- a slot among `worker_connections`; when every slot is taken, the oldest connection still waiting
  for its request gives its slot up (an attacker's idle connections cannot lock callers out);
- at most `pending_per_source` connections per source address waiting for their request (beyond it
  that source's oldest one is closed);
- `first_byte_s` to send its first byte, and REQUEST_READ_TIMEOUT_S for the whole request (a request
  whose head arrived gets a 408 then; one that sent nothing is closed);
- at most the app's body limit (ISV_MAX_BODY_BYTES) of body: a Content-Length or a chunk size past it
  goes to a thread at once, without its body, marked too large (the app answers 413 in its own terms);
  a chunked body is cut off at the limit the same way.

A whole request waits for a thread in one of two lanes (web/lane_pool.py): reads (as the app's judge
in app.extensions[lanes.EXTENSION] says: a queryInstance, a broker's GET) go before the changes
waiting, so that a burst of newInstance calls does not hold queries up.

A body whose framing is broken (a malformed chunk, a client that closes mid-body, bytes after the
message: one request per connection) goes to a thread at once marked malformed (the app answers 400 in
its own terms). The thread pool, gunicorn's parser of the head, the access log and the shutdown are
gunicorn's. The request's arrival (the monotonic time its first byte was read) is in the WSGI environ.
"""

from __future__ import annotations

import contextlib
import errno
import resource
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
from gunicorn.workers.gthread import TConn, ThreadWorker

from isvserver import lanes
from isvserver.web.lane_pool import LanePool
from isvserver.web.wire import ARRIVED, BODY_PROBLEM, MALFORMED, THREADS, TOO_LARGE

# The marketplace sends a call of a few hundred bytes at once and waits 5 s for the answer.
REQUEST_READ_TIMEOUT_S = 10.0
FIRST_BYTE_TIMEOUT_S = 5.0
PENDING_PER_SOURCE = 1024
# The body limit of an app that declares none (isvserver's is ISV_MAX_BODY_BYTES).
DEFAULT_BODY_LIMIT = 1024 * 1024
# The longest request head waited for (gunicorn's own limits on its line and fields apply after).
MAX_HEAD_BYTES = 64 * 1024
RECV_BYTES = 65536
ACCEPT_BATCH = 64  # connections accepted per wake-up of the event loop
LINGER_S = 2.0  # how long a closed connection's late bytes are read (as gunicorn does, but in the loop)
LINGER_BYTES = 65536
MAX_LINGERING = 4096
FILES_BESIDE_CONNECTIONS = 256  # the app's database, queue, logs and metrics files
SCAN_INTERVAL_S = 0.25
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 35\r\n\r\nthe request did not arrive in time\n"
)
_EMPTY_LINES = b"\r\n"
RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


@dataclass(frozen=True)
class Limits:
    """What one pending connection may hold."""

    body_bytes: int = DEFAULT_BODY_LIMIT
    first_byte_s: float = FIRST_BYTE_TIMEOUT_S
    request_s: float = REQUEST_READ_TIMEOUT_S
    pending_per_source: int = PENDING_PER_SOURCE
    # Paths with a body limit of their own: (prefix, bytes), longest prefix first.
    body_limits: tuple[tuple[str, int], ...] = ()

    def body_limit(self, target: bytes) -> int:
        """The body limit of a request for `target` (its path's mount's, else the app's)."""
        path = target.split(b"?", 1)[0].decode("ascii", "replace").rstrip("/")
        for prefix, limit in self.body_limits:
            if not prefix or path == prefix or path.startswith(prefix + "/"):
                return limit
        return self.body_bytes


def limits_of(app: Any) -> Limits:
    """The limits an isvserver app's settings set (the defaults for any other WSGI app)."""
    runtime = getattr(app, "extensions", {}).get("isvserver")
    settings = getattr(runtime, "settings", None)
    if settings is None:
        return Limits()
    return Limits(
        body_bytes=settings.max_body_bytes,
        body_limits=tuple(getattr(app, "extensions", {}).get("isvserver.body_limits", ())),
        first_byte_s=settings.first_byte_timeout_s,
        pending_per_source=settings.pending_per_source,
    )


@dataclass
class Framing:
    """One request arriving: h11 frames it; the raw bytes are kept for gunicorn's parser."""

    limits: Limits
    received: bytearray = field(default_factory=bytearray)
    arrived: float | None = None  # time.monotonic() of the first byte
    head: bool = False  # the request head is complete
    head_bytes: int = 0  # its length
    body_bytes: int = 0
    problem: str | None = None  # TOO_LARGE or MALFORMED
    body_limit: int = 0  # the limit of the request's path, once its head is read
    expects_continue: bool = False
    method: str = ""
    target: str = ""
    peek: bytearray = field(default_factory=bytearray)  # the body's first lanes.PEEK_BYTES

    def __post_init__(self) -> None:
        self.parser: Any = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)

    def feed(self, data: bytes) -> bool:
        """Take what arrived (b"": the client closed its side); whether the request is ready for a thread."""
        if data:
            if self.arrived is None:
                self.arrived = time.monotonic()
            self.received += data
        try:
            self.parser.receive_data(data)
            ready = self._advance()
        except h11.RemoteProtocolError:
            if self.head:
                self.problem = MALFORMED
            ready = True  # a head h11 refuses: gunicorn's parser answers it (400, 414, 431)
        if ready and self.problem is not None:
            del self.received[self.head_bytes :]  # the body is not read: the head is all a thread needs
        return ready

    def _advance(self) -> bool:
        while True:
            event = self.parser.next_event()
            if event is h11.NEED_DATA:
                return self._over_limit()
            if isinstance(event, h11.Request):
                self.head = True
                self.method = event.method.decode("ascii", "replace")
                self.target = event.target.decode("ascii", "replace")
                self.head_bytes = len(self.received) - len(self.parser.trailing_data[0])
                self.body_limit = self.limits.body_limit(event.target)
                length = _content_length(event.headers)
                if length is not None and length > self.body_limit:
                    self.problem = TOO_LARGE
                    return True
                self.expects_continue = self.parser.they_are_waiting_for_100_continue
            elif isinstance(event, h11.Data):
                self.body_bytes += len(event.data)
                if len(self.peek) < lanes.PEEK_BYTES:
                    self.peek += event.data[: lanes.PEEK_BYTES - len(self.peek)]
                if self._over_limit():
                    return True
            elif isinstance(event, h11.EndOfMessage):
                extra, _ = self.parser.trailing_data
                if extra.strip(_EMPTY_LINES):
                    self.problem = MALFORMED  # one request per connection: bytes after it are smuggled
                return True
            else:  # ConnectionClosed before a request
                return True

    def _over_limit(self) -> bool:
        """Whether the body, with what its current chunk still announces, is past the limit."""
        announced = getattr(getattr(self.parser, "_reader", None), "_bytes_in_chunk", 0)
        if self.body_bytes + announced > (self.body_limit or self.limits.body_bytes):
            self.problem = TOO_LARGE
            return True
        return False

    def reads(self, judge: lanes.Judge | None) -> bool:
        """Whether the whole, well-framed request only reads, as `judge` (the app's) says."""
        if judge is None or not self.head or self.problem is not None:
            return False
        path, _, query = self.target.partition("?")
        try:
            return bool(judge(lanes.Arrival(self.method, path, query, bytes(self.peek))))
        except Exception:  # the judge's trouble only changes the order requests are served in
            return False

    def environ(self) -> dict[str, Any]:
        """What the app learns of the request's arrival and framing."""
        extra: dict[str, Any] = {ARRIVED: self.arrived if self.arrived is not None else time.monotonic()}
        if self.problem is not None:
            extra[BODY_PROBLEM] = self.problem
        return extra


def _content_length(headers: Any) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


class Pending:
    """Connections waiting for their request, oldest first, and by source address."""

    def __init__(self) -> None:
        self.all: dict[TConn, None] = {}
        self.by_source: dict[str, dict[TConn, None]] = {}

    def add(self, conn: TConn) -> None:
        """Wait for `conn`."""
        self.all[conn] = None
        self.by_source.setdefault(conn.source, {})[conn] = None

    def remove(self, conn: TConn) -> None:
        """Stop waiting for `conn`."""
        self.all.pop(conn, None)
        of_source = self.by_source.get(conn.source)
        if of_source is not None:
            of_source.pop(conn, None)
            if not of_source:
                del self.by_source[conn.source]

    def oldest(self, source: str | None = None) -> TConn | None:
        """The connection waiting longest (of `source`), or None."""
        waiting = self.all if source is None else self.by_source.get(source, {})
        return next(iter(waiting), None)

    def count(self, source: str) -> int:
        """How many connections of `source` wait."""
        return len(self.by_source.get(source, ()))


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft limit of open files towards `wanted` (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def usable_slots(wanted: int, threads: int) -> int:
    """The connection slots the open files allow (raising the soft limit for `wanted` first)."""
    files = raise_open_files_limit(wanted + FILES_BESIDE_CONNECTIONS)
    return max(min(wanted, files - FILES_BESIDE_CONNECTIONS), threads + 1)


class Conn(TConn):
    """A connection whose graceful close lingers in the event loop (gthread's blocks the loop up to 2 s)."""

    linger: Any = None  # the worker's lingering close, set at accept

    def close(self, graceful: bool = False) -> None:
        """Close now, or (graceful) send FIN and let the event loop drain what the client still sends."""
        if graceful and self.linger is not None:
            self.linger(self.sock)
        else:
            super().close(graceful)


class BufferedThreadWorker(ThreadWorker):
    """gthread whose event loop, not a thread, waits for each request to arrive whole."""

    def init_process(self) -> None:
        """Room for every connection slot (and the files the app opens) before serving; fewer slots
        where the hard limit of open files does not allow them."""
        slots = usable_slots(self.worker_connections, self.cfg.threads)
        if slots < self.worker_connections:
            self.log.warning(
                "Only %d connection slots of %d: the hard limit of open files is too low (ulimit -n)",
                slots,
                self.worker_connections,
            )
            self.worker_connections = slots
        self.waiting = Pending()
        self.lingering: dict[socket.socket, list[float]] = {}
        self.next_scan = 0.0
        super().init_process()

    def load_wsgi(self) -> None:
        """Load the app; read its limits; hand it what the event loop learnt of each request."""
        super().load_wsgi()
        self.limits = limits_of(self.wsgi)
        self.judge = getattr(self.wsgi, "extensions", {}).get(lanes.EXTENSION)
        self.local = threading.local()
        self.wsgi = partial(_with_arrival, self.wsgi, self.local)

    def accept(self, listener: socket.socket) -> None:
        """Accept the connections waiting (up to ACCEPT_BATCH) and wait, in the event loop, for their
        requests (TLS in gunicorn itself, where the bytes are not the request yet: as gthread does)."""
        if self.cfg.is_ssl:
            super().accept(listener)
            return
        for _ in range(ACCEPT_BATCH):
            if not self._accept_one(listener):
                return

    def _accept_one(self, listener: socket.socket) -> bool:
        """Accept one connection; whether another may be waiting and would find a slot."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):  # out of files: the oldest waiting one goes
                self._drop(self.waiting.oldest())
            elif exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return False
        self.nr_conns += 1
        conn = Conn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        conn.linger = self._linger
        conn.source = client_addr[0] if isinstance(client_addr, tuple) else str(client_addr)
        conn.framing = Framing(self.limits)
        now = time.monotonic()
        conn.first_byte_by = now + self.limits.first_byte_s
        conn.timeout = now + self.limits.request_s
        self._make_room(conn.source)
        self.waiting.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._receive, conn))
        self._receive(conn, conn.sock)  # a caller's request is usually there already
        return self.nr_conns < self.worker_connections or bool(self.waiting.all)

    def _linger(self, sock: socket.socket) -> None:
        """Close as RFC 9112 §9.6 says without blocking the loop: FIN now, then read and drop what the
        client still sends (LINGER_BYTES, LINGER_S at most) before closing; beyond MAX_LINGERING, at once."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        if len(self.lingering) >= MAX_LINGERING:
            sock.close()
            return
        self.lingering[sock] = [time.monotonic() + LINGER_S, 0]
        self.poller.register(sock, selectors.EVENT_READ, self._drain)

    def _drain(self, sock: socket.socket) -> None:
        """Drop what a closing connection's client sent; close at its end or past the bound."""
        try:
            data = sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        state = self.lingering[sock]
        state[1] += len(data)
        if not data or state[1] >= LINGER_BYTES:
            self._end_linger(sock)

    def _end_linger(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.poller.unregister(sock)
        self.lingering.pop(sock, None)
        sock.close()

    def _make_room(self, source: str) -> None:
        """Close the oldest waiting connection of `source` past its share, and the oldest of all when
        every slot is taken."""
        if self.waiting.count(source) >= self.limits.pending_per_source:
            self._drop(self.waiting.oldest(source))
        if self.nr_conns >= self.worker_connections:
            self._drop(self.waiting.oldest())

    def _drop(self, conn: TConn | None, answer: bytes = b"") -> None:
        """Stop waiting for `conn` and close it (after `answer`, sent if the socket takes it)."""
        if conn is None:
            return
        self._forget(conn)
        with contextlib.suppress(OSError):
            if answer:
                conn.sock.send(answer)
            else:  # a reset: no TIME_WAIT left behind for a connection that never made a request
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
        self.nr_conns -= 1
        conn.close()

    def _receive(self, conn: TConn, sock: socket.socket) -> None:
        """Read what has arrived; hand the request to a thread once it is whole (or hopeless)."""
        try:
            data = sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        framing: Framing = conn.framing
        if not data and not framing.head:  # gone before its request head was whole
            self._drop(conn)
            return
        ready = framing.feed(data)
        if framing.expects_continue and not ready:
            framing.expects_continue = False
            with contextlib.suppress(OSError):
                sock.send(CONTINUE)
        if ready:
            framing.parser = None  # its buffer is no longer needed: the raw bytes go to gunicorn's parser
            self._forget(conn)
            conn.data_ready = True
            conn.reads = framing.reads(self.judge)
            self.enqueue_req(conn)

    def get_thread_pool(self) -> LanePool:
        """The threads, serving reads before the changes waiting (lane_pool.py)."""
        return LanePool(self.cfg.threads)

    def enqueue_req(self, conn: TConn) -> None:
        """Hand the request to the threads, in its lane (as gthread does, with the lane)."""
        fs = self.tpool.submit(self.handle, conn, reads=conn.__dict__.pop("reads", False))
        fs.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def _forget(self, conn: TConn) -> None:
        """Stop waiting for `conn` in the event loop."""
        with contextlib.suppress(KeyError, ValueError):
            self.poller.unregister(conn.sock)
        self.waiting.remove(conn)

    def murder_pending(self) -> None:
        """Close the connections past their first-byte or request deadline (a few times a second)."""
        super().murder_pending()
        now = time.monotonic()
        if now < self.next_scan:
            return
        self.next_scan = now + SCAN_INTERVAL_S
        for sock, (deadline, _) in list(self.lingering.items()):
            if now >= deadline:
                self._end_linger(sock)
        for conn in list(self.waiting.all):
            framing: Framing = conn.framing
            if framing.arrived is None and now >= conn.first_byte_by:
                self._drop(conn)
            elif now >= conn.timeout:
                self._drop(conn, TIMED_OUT if framing.head else b"")

    def handle(self, conn: TConn) -> Any:
        """Parse and answer a request from the bytes already read (in a thread)."""
        framing = getattr(conn, "framing", None)
        if framing is not None and not conn.initialized:
            conn.sock.setblocking(True)
            conn.init()
            unreader = conn.parser.unreader
            unreader.unread(bytes(framing.received))
            framing.received = bytearray()
            unreader.sock = ReadNothing(unreader.sock)  # everything the request holds was read
        return super().handle(conn)

    def handle_request(self, req: Any, conn: TConn) -> Any:
        """Answer one request with what the event loop learnt of it in the environ."""
        framing = conn.__dict__.pop("framing", None)  # a next request on the connection arrives when parsed
        found = framing.environ() if framing is not None else {ARRIVED: time.monotonic()}
        self.local.extra = {**found, THREADS: self.cfg.threads}
        try:
            return super().handle_request(req, conn)
        finally:
            self.local.extra = None


def _with_arrival(app: Any, local: threading.local, environ: dict[str, Any], start_response: Any) -> Any:
    """The app, called with the event loop's knowledge of the request added to its environ."""
    environ.update(getattr(local, "extra", None) or {ARRIVED: time.monotonic()})
    return app(environ, start_response)


class ReadNothing:
    """A socket whose reads find the end (the request's bytes were all read in the event loop)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self, size: int) -> bytes:
        """No more bytes."""
        return b""

    def __getattr__(self, name: str) -> Any:
        """Everything else as the socket does it."""
        return getattr(self.sock, name)
