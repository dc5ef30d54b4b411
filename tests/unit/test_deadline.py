"""The answer deadline's arithmetic, the waiting slots, the answer's delivery and the worker's stamps."""

from __future__ import annotations

import logging
import socket
import time
from types import SimpleNamespace

import pytest

from isvserver import deadline
from isvserver.web import delivery, worker


def test_the_arrival_is_the_workers_stamp_else_when_the_app_first_saw_the_request() -> None:
    stamped = {deadline.ARRIVED: 12.5}
    assert deadline.arrived(stamped) == 12.5
    unstamped: dict[str, object] = {}
    before = time.monotonic()
    first = deadline.arrived(unstamped)
    assert before <= first <= time.monotonic()
    assert deadline.arrived(unstamped) == first  # remembered: the same arrival for the whole call


def test_a_wait_ends_at_the_budget_or_early_enough_to_answer_by_the_deadline() -> None:
    environ = {deadline.ARRIVED: 100.0}
    assert deadline.answer_by(environ, 4000) == 104.0
    assert deadline.wait_until(environ, 4000, 2000) == 102.0  # the budget comes first
    assert deadline.wait_until(environ, 4000, 4500) == pytest.approx(104.0 - deadline.ANSWER_TIME_S)
    assert deadline.wait_until(environ, 1000, 4500) == pytest.approx(101.0 - deadline.ANSWER_TIME_S)


def test_half_of_a_workers_threads_may_wait() -> None:
    assert [deadline.waiting_slots(n) for n in (0, 1, 2, 4, 8)] == [0, 0, 1, 2, 4]
    assert deadline.threads_of({deadline.THREADS: 8}) == 8
    assert deadline.threads_of({}) == deadline.DEFAULT_THREADS


def test_a_call_that_finds_no_free_waiting_slot_does_not_wait_for_one() -> None:
    with deadline.waiting_slot(6) as first, deadline.waiting_slot(6) as second:
        assert first and second
        with deadline.waiting_slot(6) as third, deadline.waiting_slot(6) as fourth:
            assert third and not fourth  # 3 slots of 6 threads
    with deadline.waiting_slot(6) as again:
        assert again  # released at the end of each block
    with deadline.waiting_slot(1) as none:
        assert not none  # a single thread never waits


def test_the_worker_and_the_app_name_the_same_environ_keys() -> None:
    assert (worker.ARRIVED, worker.THREADS) == (deadline.ARRIVED, deadline.THREADS)


def test_a_peer_is_open_closed_or_reset() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        assert delivery.peer_state(ours) == delivery.OPEN
        theirs.sendall(b"x")  # bytes waiting are not consumed by the look
        assert delivery.peer_state(ours) == delivery.OPEN
        assert ours.recv(1) == b"x"
        theirs.close()
        assert delivery.peer_state(ours) == delivery.CLOSED
    assert delivery.peer_state(ours) == delivery.RESET  # a closed socket: nothing can be written either


def test_an_answer_written_whole_is_sent() -> None:
    environ: dict[str, object] = {}
    outcomes: list[str] = []

    def app(env, start_response):
        delivery.on_answer(env, outcomes.append)
        return [b"a", b"b"]

    body = delivery.Tracked(app)(environ, lambda status, headers: None)
    assert b"".join(body) == b"ab"
    body.close()
    assert outcomes == [delivery.SENT]
    assert isinstance(environ[deadline.ARRIVED], float)


def test_an_answer_never_asked_for_is_not_sent_and_a_cut_off_one_says_the_client_went() -> None:
    outcomes: list[str] = []

    class Body(list):
        closed = False

        def close(self) -> None:
            self.closed = True

    def app(env, start_response):
        delivery.on_answer(env, outcomes.append)
        return Body([b"a", b"b"])

    never = delivery.Tracked(app)({}, lambda status, headers: None)
    never.close()  # the worker stopped before writing anything
    cut = delivery.Tracked(app)({}, lambda status, headers: None)
    pieces = iter(cut)
    next(pieces)  # the first piece's write failed: the server asks for no more
    cut.close()
    assert outcomes == [delivery.NOT_SENT, delivery.CLIENT_GONE]
    assert never.body.closed and cut.body.closed


class ResetSocket:
    """A client connection that was reset: every look at it fails."""

    def recv(self, size: int, flags: int = 0) -> bytes:
        raise ConnectionResetError(104, "Connection reset by peer")


def test_an_answer_to_a_client_that_closed_its_side_is_written_and_says_it_had_gone() -> None:
    ours, theirs = socket.socketpair()
    theirs.close()  # gone, or an HTTP client that half-closed after its request: it may still read
    outcomes: list[str] = []

    def app(env, start_response):
        delivery.on_answer(env, outcomes.append)
        return [b"answer"]

    with ours:
        body = delivery.Tracked(app)({"gunicorn.socket": ours}, lambda status, headers: None)
        assert list(body) == [b"answer"]
        body.close()
    assert outcomes == [delivery.CLIENT_GONE]


def test_no_byte_goes_to_a_client_that_reset_its_connection(caplog: pytest.LogCaptureFixture) -> None:
    ours = ResetSocket()
    outcomes: list[str] = []

    def app(env, start_response):
        delivery.on_answer(env, outcomes.append)
        delivery.on_answer(env, lambda outcome: 1 / 0)  # a failing hook is logged, the others still run
        delivery.on_answer(env, outcomes.append)
        return [b"answer"]

    calls_log = logging.getLogger("isvserver.calls")  # isvserver's loggers do not propagate to the root
    calls_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.ERROR, "isvserver.calls"):
            body = delivery.Tracked(app)({"gunicorn.socket": ours}, lambda status, headers: None)
            with pytest.raises(BrokenPipeError):
                list(body)
            body.close()
    finally:
        calls_log.removeHandler(caplog.handler)
    assert outcomes == [delivery.CLIENT_GONE, delivery.CLIENT_GONE]
    assert "answer hook failed" in caplog.text


def test_the_worker_stamps_the_first_bytes_arrival_and_its_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker notes when a request's first byte was read and puts it, and its thread count, in the
    environ; a request parsed by gunicorn itself (keep-alive) arrives when it is parsed."""
    from gunicorn.workers.gthread import ThreadWorker

    seen: list[dict[str, object]] = []
    monkeypatch.setattr(
        ThreadWorker, "load_wsgi", lambda self: setattr(self, "wsgi", lambda e, s: seen.append(e))
    )
    monkeypatch.setattr(ThreadWorker, "handle_request", lambda self, req, conn: self.wsgi({}, None))
    instance = object.__new__(worker.BufferedThreadWorker)
    instance.cfg = SimpleNamespace(threads=6)
    instance.load_wsgi()

    ours, theirs = socket.socketpair()
    with ours, theirs:
        conn = SimpleNamespace(framing=worker.Framing(worker.Limits()))
        theirs.sendall(b"POST /saasproduce HTTP/1.1\r\n")
        before = time.monotonic()
        instance._receive(conn, ours)
        first = conn.framing.arrived
        assert before <= first <= time.monotonic()
        theirs.sendall(b"Host: x\r\n")
        instance._receive(conn, ours)
        assert conn.framing.arrived == first  # the first byte's time, not the last one's

    instance.handle_request(None, conn)
    before = time.monotonic()
    instance.handle_request(None, conn)  # the next request on the connection
    stamp = seen[1][worker.ARRIVED]
    instance.wsgi({}, None)  # a request that came another way (HTTP/2) is stamped now, not with a stale stamp
    assert seen[0] == {worker.ARRIVED: first, worker.THREADS: 6}
    assert stamp >= before
    assert seen[2][worker.ARRIVED] > stamp
