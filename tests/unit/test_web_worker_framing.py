"""The web worker's event loop: framing with h11, body limits, slots, per-source limits and deadlines.

The worker's methods run here in-process on real loopback sockets, with a thread pool that only
records what it is handed (gunicorn itself runs them in tests/e2e/test_hostile_traffic.py).
"""

from __future__ import annotations

import errno
import resource
import selectors
import socket
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.workers.gthread import TConn

from isvserver.web import worker as worker_module
from isvserver.web.wire import ARRIVED, BODY_PROBLEM, MALFORMED, THREADS, TOO_LARGE
from isvserver.web.worker import (
    CONTINUE,
    FILES_BESIDE_CONNECTIONS,
    LINGER_BYTES,
    RESET,
    TIMED_OUT,
    BufferedThreadWorker,
    Conn,
    Framing,
    Limits,
    Pending,
    ReadNothing,
    _with_arrival,
    limits_of,
    raise_open_files_limit,
    usable_slots,
)

HEAD = b"POST /saasproduce HTTP/1.1\r\nHost: x\r\n"
CHUNKED = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"


def fed(limit: int, *pieces: bytes) -> tuple[Framing, list[bool]]:
    framing = Framing(Limits(body_bytes=limit))
    return framing, [framing.feed(piece) for piece in pieces]


def test_a_body_of_exactly_the_limit_is_whole_and_one_byte_more_is_too_large() -> None:
    """Content-Length = limit: read whole, no problem; limit + 1: too large from the head alone."""
    framing, ready = fed(1024, HEAD + b"Content-Length: 1024\r\n\r\n", b"x" * 1023, b"x")
    assert ready == [False, False, True] and framing.problem is None
    assert framing.body_bytes == 1024
    framing, ready = fed(1024, HEAD + b"Content-Length: 1025\r\n\r\n")
    assert ready == [True] and framing.problem == TOO_LARGE


def test_a_mount_with_a_body_limit_of_its_own_takes_bodies_up_to_it_and_no_further() -> None:
    """A path under a mount's own limit (the product API's 1 MiB) frames against it; any other path
    against the app's ISV_MAX_BODY_BYTES, at once from the head."""
    limits = Limits(body_bytes=1024, body_limits=(("/v1", 4096),))
    assert [limits.body_limit(t) for t in (b"/v1/usage", b"/v1", b"/v1x", b"/saasproduce?a=1")] == [
        4096, 4096, 1024, 1024,
    ]  # fmt: skip
    usage = b"POST /v1/usage HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n"
    framing = Framing(limits)
    assert [framing.feed(usage), framing.feed(b"x" * 4096)] == [False, True]
    assert framing.problem is None
    over = Framing(limits)
    assert over.feed(usage.replace(b"4096", b"4097")) and over.problem == TOO_LARGE
    produce = Framing(limits)
    assert produce.feed(HEAD + b"Content-Length: 1025\r\n\r\n") and produce.problem == TOO_LARGE


def test_a_chunked_body_is_cut_off_at_the_limit() -> None:
    """Chunks adding up to the limit are whole; one byte past it is too large at once, unread."""
    framing, ready = fed(1024, CHUNKED + b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n")
    assert ready == [True] and framing.problem is None and framing.body_bytes == 1024
    framing, ready = fed(1024, CHUNKED + b"200\r\n" + b"x" * 512 + b"\r\n", b"201\r\nx")
    assert ready == [False, True] and framing.problem == TOO_LARGE


@pytest.mark.parametrize("size", [b"7fffffffffffffff", b"401"])
def test_a_chunk_announcing_more_than_the_limit_is_too_large_at_its_first_byte(size: bytes) -> None:
    """A chunk size past the limit (1024) is answered before its data arrives, whatever it claims."""
    framing, ready = fed(1024, CHUNKED + size + b"\r\nab")
    assert ready == [True] and framing.problem == TOO_LARGE


def test_a_chunk_shorter_than_its_size_waits_and_is_malformed_when_the_client_stops() -> None:
    """`10\\r\\nab\\r\\n\\r\\n`: 6 of 16 bytes; nothing for a thread until the client closes its side."""
    framing, ready = fed(1024, CHUNKED + b"10\r\nab\r\n\r\n")
    assert ready == [False] and framing.problem is None
    assert framing.feed(b"") is True and framing.problem == MALFORMED


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nab\r\n0\r\n\r\n",  # size not hex
        b"2\r\nabXX0\r\n\r\n",  # no CRLF after the data
        b"2\r\nab\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",  # bytes after the body
    ],
)
def test_broken_framing_after_the_head_is_malformed_at_once(body: bytes) -> None:
    framing, ready = fed(1024, CHUNKED + body)
    assert ready == [True] and framing.problem == MALFORMED


def test_bytes_after_a_content_length_body_are_malformed_but_empty_lines_are_not() -> None:
    framing, ready = fed(1024, HEAD + b"Content-Length: 2\r\n\r\nabX")
    assert ready == [True] and framing.problem == MALFORMED
    framing, ready = fed(1024, HEAD + b"Content-Length: 2\r\n\r\nab\r\n")
    assert ready == [True] and framing.problem is None


def test_a_head_h11_refuses_goes_to_gunicorns_parser_unmarked() -> None:
    """gunicorn's own parser answers it (400/414/431), as it answers any bad head."""
    framing, ready = fed(1024, b"POST / HTTP/1.1 extra\r\n\r\n")
    assert ready == [True] and framing.problem is None and framing.head is False


def test_the_arrival_is_the_first_bytes_time_and_the_environ_says_what_was_found() -> None:
    before = time.monotonic()
    framing = Framing(Limits(body_bytes=1024))
    framing.feed(HEAD)
    arrived = framing.arrived
    assert arrived is not None and before <= arrived <= time.monotonic()
    framing.feed(b"Content-Length: 2000\r\n\r\n")
    assert framing.arrived == arrived
    assert framing.environ() == {ARRIVED: arrived, BODY_PROBLEM: TOO_LARGE}
    assert Framing(Limits()).environ()[ARRIVED] >= before  # nothing read: now
    assert BODY_PROBLEM not in fed(1024, HEAD + b"\r\n")[0].environ()


def test_the_app_is_called_with_the_event_loops_findings() -> None:
    seen: dict[str, Any] = {}
    local = threading.local()
    local.extra = {ARRIVED: 12.5, BODY_PROBLEM: MALFORMED}
    assert _with_arrival(lambda environ, start: seen.update(environ) or [b"ok"], local, {"a": 1}, None) == [
        b"ok"
    ]
    assert seen == {"a": 1, ARRIVED: 12.5, BODY_PROBLEM: MALFORMED}
    local.extra = None
    before = time.monotonic()
    _with_arrival(lambda environ, start: seen.update(environ), local, {}, None)
    assert seen[ARRIVED] >= before


def test_limits_come_from_an_isvserver_apps_settings_and_default_elsewhere() -> None:
    settings = SimpleNamespace(max_body_bytes=2048, first_byte_timeout_s=1.5, pending_per_source=7)
    app = SimpleNamespace(extensions={"isvserver": SimpleNamespace(settings=settings)})
    assert limits_of(app) == Limits(body_bytes=2048, first_byte_s=1.5, pending_per_source=7)
    assert limits_of(object()) == Limits()
    assert Limits() == Limits(1024 * 1024, 5.0, 10.0, 1024)


def test_reads_after_the_event_loop_find_the_end() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"more")
        wrapped = ReadNothing(left)
        assert wrapped.recv(10) == b""
        assert wrapped.fileno() == left.fileno()


def test_the_open_files_limit_is_raised_up_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        assert raise_open_files_limit(soft - 1) == soft
        if hard == resource.RLIM_INFINITY or hard > soft:
            assert raise_open_files_limit(soft + 1) == soft + 1
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft + 1
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_slots_are_what_the_open_files_allow(monkeypatch) -> None:
    limits = {"soft": 1024, "hard": 2048}

    def getrlimit(kind: int) -> tuple[int, int]:
        return limits["soft"], limits["hard"]

    def setrlimit(kind: int, value: tuple[int, int]) -> None:
        limits["soft"] = value[0]

    monkeypatch.setattr(worker_module.resource, "getrlimit", getrlimit)
    monkeypatch.setattr(worker_module.resource, "setrlimit", setrlimit)
    assert usable_slots(1000, 4) == 1000 and limits["soft"] == 1000 + FILES_BESIDE_CONNECTIONS
    assert usable_slots(4096, 4) == 2048 - FILES_BESIDE_CONNECTIONS and limits["soft"] == 2048
    limits["hard"] = limits["soft"] = 200
    assert usable_slots(4096, 4) == 5  # never fewer than the threads need


def test_pending_connections_are_kept_oldest_first_per_source() -> None:
    pending = Pending()

    class Conn:
        def __init__(self, source: str) -> None:
            self.source = source

    a1, a2, b1 = (Conn(s) for s in ("a", "a", "b"))
    for conn in (a1, b1, a2):
        pending.add(conn)
    assert pending.oldest() is a1 and pending.oldest("a") is a1 and pending.oldest("b") is b1
    assert pending.count("a") == 2 and pending.count("c") == 0 and pending.oldest("c") is None
    pending.remove(a1)
    assert pending.oldest() is b1 and pending.oldest("a") is a2 and pending.count("a") == 1
    pending.remove(b1)
    pending.remove(b1)  # twice: nothing more happens
    assert "b" not in pending.by_source and list(pending.all) == [a2]


# --- the event loop on real sockets ---------------------------------------------------------------


class Loop:
    """A BufferedThreadWorker's event-loop state without a gunicorn arbiter, on a real listener."""

    def __init__(self, limits: Limits, slots: int = 100) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        w = BufferedThreadWorker.__new__(BufferedThreadWorker)
        w.cfg = SimpleNamespace(is_ssl=False, worker_connections=slots)
        w.worker_connections = slots
        w.nr_conns = 0
        w.poller = selectors.DefaultSelector()
        w.pending_conns = []
        w.waiting = Pending()
        w.lingering = {}
        w.next_scan = 0.0
        w.limits = limits
        w.handed: list[TConn] = []
        w.enqueue_req = w.handed.append
        w.judge = None
        self.worker = w
        self.clients: list[socket.socket] = []

    def connect(self, data: bytes = b"") -> socket.socket:
        client = socket.create_connection(self.listener.getsockname())
        self.clients.append(client)
        if data:
            client.sendall(data)
            time.sleep(0.02)  # loopback: the bytes are there before accept() reads
        self.worker.accept(self.listener)
        return client

    def pump(self, until: Any, seconds: float = 5.0) -> None:
        deadline = time.monotonic() + seconds
        while not until() and time.monotonic() < deadline:
            for key, _ in self.worker.poller.select(0.05):
                key.data(key.fileobj)

    def close(self) -> None:
        server_side = [c.sock for c in (*self.worker.handed, *self.worker.waiting.all)]
        server_side += list(self.worker.lingering)
        for sock in [*self.clients, *server_side, self.listener]:
            sock.close()
        self.worker.poller.close()


@pytest.fixture
def loop():
    made: list[Loop] = []

    def make(limits: Limits | None = None, slots: int = 100) -> Loop:
        made.append(Loop(limits or Limits(body_bytes=1024), slots))
        return made[-1]

    yield make
    for each in made:
        each.close()


RESET_BY_SERVER = b"<reset>"


def answer_of(client: socket.socket) -> bytes:
    """What the server sent before closing, or RESET_BY_SERVER when it reset the connection."""
    client.settimeout(5)
    data = b""
    try:
        while chunk := client.recv(4096):
            data += chunk
    except ConnectionResetError:
        return RESET_BY_SERVER
    return data


def test_a_whole_request_goes_to_a_thread_with_its_bytes_and_source(loop) -> None:
    lp = loop()
    request = HEAD + b"Content-Length: 2\r\n\r\nab"
    lp.connect(request)
    [conn] = lp.worker.handed
    assert bytes(conn.framing.received) == request and conn.source == "127.0.0.1" and conn.data_ready
    assert lp.worker.nr_conns == 1 and not lp.worker.waiting.all


def test_a_request_in_pieces_waits_in_the_loop_and_100_continue_is_sent_once(loop) -> None:
    lp = loop()
    client = lp.connect(HEAD + b"Expect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    assert lp.worker.handed == [] and len(lp.worker.waiting.all) == 1
    client.settimeout(5)
    assert client.recv(100) == CONTINUE
    client.sendall(b"ab")
    lp.pump(lambda: False, 0.2)
    assert lp.worker.handed == []
    client.sendall(b"cd")
    lp.pump(lambda: lp.worker.handed)
    assert lp.worker.handed[0].framing.body_bytes == 4 and not lp.worker.waiting.all
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(100)  # no second 100 Continue


def test_a_client_gone_before_its_head_is_closed_and_mid_body_is_malformed(loop) -> None:
    lp = loop()
    client = lp.connect(b"POST / HT")
    client.shutdown(socket.SHUT_WR)
    lp.pump(lambda: not lp.worker.waiting.all)
    assert lp.worker.handed == [] and lp.worker.nr_conns == 0
    client = lp.connect(CHUNKED + b"10\r\nab\r\n\r\n")
    assert lp.worker.handed == []
    client.shutdown(socket.SHUT_WR)
    lp.pump(lambda: lp.worker.handed)
    assert lp.worker.handed[0].framing.problem == MALFORMED


def test_a_source_past_its_share_loses_its_oldest_waiting_connection(loop) -> None:
    lp = loop(Limits(body_bytes=1024, pending_per_source=2))
    first, second, third = (lp.connect() for _ in range(3))
    assert lp.worker.waiting.count("127.0.0.1") == 2 and lp.worker.nr_conns == 2
    assert answer_of(first) == RESET_BY_SERVER
    assert [c.sock.getpeername() for c in lp.worker.waiting.all] == [s.getsockname() for s in (second, third)]


def test_when_every_slot_is_taken_the_oldest_waiting_connection_gives_its_up(loop) -> None:
    lp = loop(slots=3)
    idle = [lp.connect() for _ in range(3)]
    assert lp.worker.nr_conns == 2  # the third took the first's slot
    caller = lp.connect(HEAD + b"\r\n")
    assert len(lp.worker.handed) == 1 and lp.worker.nr_conns == 2
    assert answer_of(idle[0]) == RESET_BY_SERVER and answer_of(idle[1]) == RESET_BY_SERVER
    assert [c.sock.getpeername() for c in lp.worker.waiting.all] == [idle[2].getsockname()]
    assert lp.worker.handed[0].sock.getpeername() == caller.getsockname()


def test_one_wake_up_accepts_every_waiting_connection(loop) -> None:
    lp = loop()
    clients = [socket.create_connection(lp.listener.getsockname()) for _ in range(3)]
    lp.clients.extend(clients)
    time.sleep(0.05)  # loopback: the three handshakes are done
    lp.worker.accept(lp.listener)
    assert len(lp.worker.waiting.all) == 3 and lp.worker.nr_conns == 3


def test_out_of_files_the_oldest_waiting_connection_goes(loop, monkeypatch) -> None:
    lp = loop()
    first = lp.connect()
    lp.connect()

    class Exhausted:
        def accept(self) -> None:
            raise OSError(errno.EMFILE, "Too many open files")

    lp.worker.accept(Exhausted())
    assert lp.worker.nr_conns == 1 and answer_of(first) == RESET_BY_SERVER

    class Broken:
        def accept(self) -> None:
            raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(OSError):
        lp.worker.accept(Broken())


def test_deadlines_close_the_idle_and_answer_408_to_a_request_half_sent(loop, monkeypatch) -> None:
    lp = loop(Limits(body_bytes=1024, first_byte_s=0.6, request_s=3.0))
    idle = lp.connect()
    half = lp.connect(HEAD + b"Content-Length: 5\r\n\r\nab")
    trickle = lp.connect(b"POST / HTTP/1.1\r\n")
    now = time.monotonic()
    clock = {"now": now + 0.5}
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: clock["now"])
    lp.worker.murder_pending()
    assert len(lp.worker.waiting.all) == 3
    clock["now"] = now + 0.7
    lp.worker.murder_pending()  # within SCAN_INTERVAL_S of the last scan: nothing yet
    assert len(lp.worker.waiting.all) == 3
    lp.worker.next_scan = 0.0
    lp.worker.murder_pending()
    assert len(lp.worker.waiting.all) == 2 and answer_of(idle) == RESET_BY_SERVER
    clock["now"] = now + 3.1
    lp.worker.next_scan = 0.0
    lp.worker.murder_pending()
    assert not lp.worker.waiting.all and lp.worker.nr_conns == 0
    assert answer_of(half) == TIMED_OUT
    assert answer_of(trickle) == RESET_BY_SERVER  # no head yet: nothing to answer


def test_the_408_answer_is_well_formed() -> None:
    head, _, body = TIMED_OUT.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"Content-Length: %d" % len(body) in head


def test_a_request_whose_body_is_not_read_keeps_only_its_head() -> None:
    head = HEAD + b"Content-Length: 5000\r\n\r\n"
    framing, ready = fed(1024, head + b"x" * 600)
    assert ready == [True] and bytes(framing.received) == head and framing.head_bytes == len(head)
    framing, ready = fed(1024, CHUNKED + b"zz\r\nab")
    assert ready == [True] and bytes(framing.received) == CHUNKED
    whole = HEAD + b"Content-Length: 2\r\n\r\nab"
    assert bytes(fed(1024, whole)[0].received) == whole  # a body the app reads stays


def test_a_request_handed_over_drops_its_framers_buffer(loop) -> None:
    lp = loop()
    lp.connect(HEAD + b"\r\n")
    assert lp.worker.handed[0].framing.parser is None


def closing(lp: Loop) -> tuple[socket.socket, Any]:
    """A client whose request went to a thread, and its server-side connection."""
    client = lp.connect(HEAD + b"\r\n")
    return client, lp.worker.handed.pop()


def test_a_graceful_close_sends_fin_and_drains_in_the_loop(loop) -> None:
    lp = loop()
    client, conn = closing(lp)
    assert isinstance(conn, Conn)
    conn.close(graceful=True)
    client.settimeout(5)
    assert client.recv(10) == b""  # FIN at once, the loop not blocked
    assert list(lp.worker.lingering) == [conn.sock]
    client.sendall(b"late bytes")
    lp.pump(lambda: lp.worker.lingering[conn.sock][1] == 10)
    assert lp.worker.lingering[conn.sock][1] == 10
    client.close()
    lp.pump(lambda: not lp.worker.lingering)
    assert conn.sock.fileno() == -1


def test_lingering_ends_at_its_byte_bound_and_its_deadline(loop, monkeypatch) -> None:
    lp = loop()
    client, conn = closing(lp)
    conn.close(graceful=True)
    client.sendall(b"x" * (LINGER_BYTES + 10))
    lp.pump(lambda: not lp.worker.lingering)
    assert conn.sock.fileno() == -1
    client, conn = closing(lp)
    conn.close(graceful=True)
    deadline = lp.worker.lingering[conn.sock][0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: deadline - 0.01)
    lp.worker.murder_pending()
    assert conn.sock in lp.worker.lingering
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: deadline)
    lp.worker.next_scan = 0.0
    lp.worker.murder_pending()
    assert not lp.worker.lingering and conn.sock.fileno() == -1


def test_past_the_lingering_bound_a_close_is_immediate(loop, monkeypatch) -> None:
    lp = loop()
    monkeypatch.setattr(worker_module, "MAX_LINGERING", 1)
    _, first = closing(lp)
    first.close(graceful=True)
    _, conn = closing(lp)
    conn.close(graceful=True)
    assert list(lp.worker.lingering) == [first.sock] and conn.sock.fileno() == -1
    _, conn = closing(lp)
    conn.close()  # not graceful: at once
    assert conn.sock.fileno() == -1 and len(lp.worker.lingering) == 1


# --- a thread's side, with gunicorn's own parser and response writer -----------------------------


def threaded(lp: Loop, app: Any) -> BufferedThreadWorker:
    """The loop's worker made ready to answer requests in this thread, with gunicorn's config."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    cfg = Config()
    cfg.set("accesslog", None)
    w = lp.worker
    w.cfg, w.log, w.alive, w.nr, w.max_requests = cfg, Logger(cfg), True, 0, 1000
    w.max_keepalived, w.keepalived_conns = 0, []
    w.local = threading.local()
    w.app = SimpleNamespace(wsgi=lambda: app)
    w.load_wsgi()
    return w


def recording_app(seen: list[dict[str, Any]]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read() if BODY_PROBLEM not in environ else b"unread"
        seen.append({**environ, "body": body})
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def test_a_thread_answers_from_the_bytes_read_with_the_arrival_in_the_environ(loop) -> None:
    lp = loop()
    seen: list[dict[str, Any]] = []
    w = threaded(lp, recording_app(seen))
    assert w.limits == Limits()  # not an isvserver app: the defaults
    client = lp.connect(HEAD + b"Content-Length: 5\r\n\r\nhello")
    conn = w.handed.pop()
    framing = conn.framing
    assert w.handle(conn) is False  # one request per connection
    [environ] = seen
    assert environ[ARRIVED] == framing.arrived and BODY_PROBLEM not in environ
    assert environ[THREADS] == w.cfg.threads
    assert environ["body"] == b"hello"
    assert w.local.extra is None  # nothing left for the thread's next request
    conn.close()
    answer = answer_of(client)
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"\r\n\r\nhello")


def test_a_thread_never_reads_the_socket_for_a_body_marked_too_large(loop) -> None:
    lp = loop(Limits(body_bytes=1024))
    seen: list[dict[str, Any]] = []
    w = threaded(lp, recording_app(seen))
    w.limits = Limits(body_bytes=1024)
    client = lp.connect(HEAD + b"Content-Length: 5000\r\n\r\n" + b"x" * 100)
    conn = w.handed.pop()
    client.sendall(b"y" * 100)  # more of the body arrives: nobody reads it
    started = time.monotonic()
    w.handle(conn)
    assert time.monotonic() - started < 1.0
    [environ] = seen
    assert environ[BODY_PROBLEM] == TOO_LARGE and environ["body"] == b"unread"
    assert isinstance(conn.parser.unreader.sock, ReadNothing)
    conn.close()
    client.close()


def test_a_request_that_did_not_come_through_the_loop_gets_its_arrival_now(loop) -> None:
    lp = loop()
    seen: list[dict[str, Any]] = []
    w = threaded(lp, recording_app(seen))
    client = lp.connect()
    conn = lp.worker.waiting.oldest()
    w._forget(conn)
    conn.framing = None  # as a TLS connection, which gthread's own accept made
    conn.data_ready = True
    client.sendall(HEAD + b"\r\n")
    client.shutdown(socket.SHUT_WR)
    before = time.monotonic()
    w.handle(conn)
    assert seen[0][ARRIVED] >= before
    conn.close()
    client.close()


# --- the limits as documented (README "Hostile traffic") ------------------------------------------


def test_the_documented_limits() -> None:
    assert Limits() == Limits(body_bytes=1048576, first_byte_s=5.0, request_s=10.0, pending_per_source=1024)
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert (worker_module.MAX_LINGERING, worker_module.LINGER_S, LINGER_BYTES) == (4096, 2.0, 65536)
    assert (worker_module.ACCEPT_BATCH, FILES_BESIDE_CONNECTIONS) == (64, 256)


def test_a_head_of_64_kib_is_waited_for_and_a_longer_one_is_not() -> None:
    start = b"POST / HTTP/1.1\r\nHost: x\r\nX-Pad: "
    framing, ready = fed(1024, start + b"a" * (65536 - len(start)))
    assert ready == [False]
    framing, ready = fed(1024, start + b"a" * (65536 - len(start) + 1))
    assert ready == [True] and framing.problem is None and not framing.head


def test_a_space_after_the_body_is_a_byte_after_it() -> None:
    framing, ready = fed(1024, HEAD + b"Content-Length: 2\r\n\r\nab ")
    assert ready == [True] and framing.problem == MALFORMED


def test_one_read_takes_at_most_64_kib(loop) -> None:
    lp = loop(Limits(body_bytes=200_000))
    client = lp.connect()
    conn = lp.worker.waiting.oldest()
    client.sendall(HEAD + b"Content-Length: 150000\r\n\r\n" + b"x" * 150000)
    time.sleep(0.05)  # loopback: the bytes are there
    lp.worker._receive(conn, conn.sock)
    assert len(conn.framing.received) == 65536


def test_one_wake_up_accepts_at_most_64_connections(loop) -> None:
    lp = loop(slots=1000)
    lp.clients.extend(socket.create_connection(lp.listener.getsockname()) for _ in range(65))
    time.sleep(0.1)  # loopback: the handshakes are done
    lp.worker.accept(lp.listener)
    assert len(lp.worker.waiting.all) == 64
    lp.worker.accept(lp.listener)
    assert len(lp.worker.waiting.all) == 65


def test_deadlines_are_scanned_four_times_a_second(loop, monkeypatch) -> None:
    lp = loop(Limits(body_bytes=1024, first_byte_s=0.1))
    lp.connect()
    now = time.monotonic()
    clock = {"now": now}
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: clock["now"])
    lp.worker.murder_pending()  # scans at `now`: nothing due yet
    clock["now"] = now + 0.24
    lp.worker.murder_pending()
    assert len(lp.worker.waiting.all) == 1
    clock["now"] = now + 0.26
    lp.worker.murder_pending()
    assert not lp.worker.waiting.all


def test_a_closed_connection_lingers_two_seconds(loop) -> None:
    lp = loop()
    _, conn = closing(lp)
    before = time.monotonic()
    conn.close(graceful=True)
    deadline = lp.worker.lingering[conn.sock][0]
    assert before + 2.0 <= deadline <= time.monotonic() + 2.0


def test_limits_cannot_be_changed_once_read() -> None:
    from dataclasses import FrozenInstanceError

    with pytest.raises(FrozenInstanceError):
        Limits().body_bytes = 1  # type: ignore[misc]


def test_a_client_that_resets_while_its_connection_lingers_is_closed_at_once(loop) -> None:
    lp = loop()
    client, conn = closing(lp)
    conn.close(graceful=True)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
    client.close()
    with selectors.DefaultSelector() as ready:
        ready.register(conn.sock, selectors.EVENT_READ)
        assert ready.select(5)
    lp.worker._drain(conn.sock)  # one read: the reset ends it
    assert not lp.worker.lingering and conn.sock.fileno() == -1


def test_starting_a_worker_sets_up_its_loop_state_within_the_files_allowed(monkeypatch) -> None:
    from gunicorn.workers.gthread import ThreadWorker

    started: list[bool] = []
    monkeypatch.setattr(ThreadWorker, "init_process", lambda self: started.append(True))
    monkeypatch.setattr(worker_module, "usable_slots", lambda wanted, threads: 100)
    warnings: list[str] = []
    w = BufferedThreadWorker.__new__(BufferedThreadWorker)
    w.cfg = SimpleNamespace(threads=4)
    w.worker_connections = 4096
    w.log = SimpleNamespace(warning=lambda message, *args: warnings.append(message % args))
    w.init_process()
    assert started == [True] and w.worker_connections == 100
    assert isinstance(w.waiting, Pending) and w.lingering == {} and w.next_scan == 0.0
    assert warnings == [
        "Only 100 connection slots of 4096: the hard limit of open files is too low (ulimit -n)"
    ]
    monkeypatch.setattr(worker_module, "usable_slots", lambda wanted, threads: wanted)
    warnings.clear()
    w.init_process()
    assert w.worker_connections == 100 and warnings == []
