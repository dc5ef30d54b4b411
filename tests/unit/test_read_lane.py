"""The read lane: judges of arrivals, what the worker's framing shows them, the order threads go in."""

from __future__ import annotations

import json
import threading

import pytest

from isvserver import lanes
from isvserver.lanes import Arrival
from isvserver.web.lane_pool import READS_IN_A_ROW, LanePool
from isvserver.web.worker import Framing, Limits

QUERIES = lanes.json_field_in("activity", {"queryInstance"})


def test_a_json_body_reads_when_its_top_level_field_is_one_of_the_values() -> None:
    def judged(body: bytes) -> bool:
        return QUERIES(Arrival("POST", "/p", "", body))

    assert judged(b'{"activity": "queryInstance"}')
    assert not judged(b'{"activity": "newInstance"}')
    assert not judged(b'{"data": {"activity": "queryInstance"}}')  # only the top level counts
    assert not judged(b'[{"activity": "queryInstance"}]') and not judged(b"activity=queryInstance")
    assert not judged(b'{"activity": ["queryInstance"]}')  # a list is not one of the values
    assert not judged(b"[" * 100_000 + b"]" * 100_000)  # too deep for the parser: a change


def test_a_query_string_reads_when_its_one_field_is_one_of_the_values() -> None:
    judge = lanes.query_field_in("activity", {"queryInstance"})

    def judged(query: str) -> bool:
        return judge(Arrival("GET", "/p", query, b""))

    assert judged("authToken=x&activity=queryInstance") and judged("activity=query%49nstance")
    assert not judged("activity=newInstance") and not judged("") and not judged("activity=")
    assert not judged("activity=queryInstance&activity=newInstance")  # two answers: not trusted
    assert not judged("&".join(f"f{n}=1" for n in range(100)) + "&activity=queryInstance")


def test_get_and_head_are_safe_methods_and_nothing_else_is() -> None:
    assert [
        m
        for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
        if lanes.safe_method(Arrival(m, "/", "", b""))
    ] == ["GET", "HEAD"]


def framed(raw: bytes, limit: int = 65536) -> Framing:
    framing = Framing(Limits(body_bytes=limit))
    assert framing.feed(raw)
    return framing


def test_the_judge_sees_the_method_path_query_and_the_bodys_first_bytes() -> None:
    seen: list[Arrival] = []
    body = json.dumps({"activity": "queryInstance", "pad": "x" * 10_000}).encode()
    raw = b"POST /saasproduce?a=1&b=2 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    assert framed(raw).reads(lambda arrival: seen.append(arrival) or True)
    [arrival] = seen
    assert (arrival.method, arrival.path, arrival.query) == ("POST", "/saasproduce", "a=1&b=2")
    assert arrival.body == body[: lanes.PEEK_BYTES]
    assert not framed(raw).reads(QUERIES)  # a body longer than the peek is not JSON to the judge


def test_a_chunked_body_is_shown_to_the_judge_without_its_framing() -> None:
    pieces = (b'{"act', b'ivity": "queryInstance"}')
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    raw = b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    assert framed(raw).reads(QUERIES)


def test_a_request_with_a_body_problem_a_failing_judge_or_no_judge_is_a_change() -> None:
    too_large = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 999\r\n\r\n"
    smuggled = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\n\r\n"
    get = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"

    def broken(arrival: Arrival) -> bool:
        raise RuntimeError("the judge failed")

    assert not framed(too_large, limit=10).reads(lanes.safe_method)
    assert not framed(smuggled).reads(lambda arrival: True)
    assert framed(get).reads(lanes.safe_method)
    assert not framed(get).reads(broken) and not framed(get).reads(None)


def served_in_order(threads: int, lanes_of: list[tuple[str, bool]]) -> list[str]:
    """What a pool of `threads` runs, in order, when `lanes_of` arrive while its threads are held."""
    pool = LanePool(threads)
    release, holding = threading.Event(), threading.Semaphore(0)

    def hold() -> None:
        holding.release()
        release.wait(5)

    ran: list[str] = []
    held = [pool.submit(hold) for _ in range(threads)]
    for _ in range(threads):
        assert holding.acquire(timeout=5)  # every thread is busy before the others arrive
    futures = [pool.submit(ran.append, name, reads=reads) for name, reads in lanes_of]
    release.set()
    for future in (*held, *futures):
        future.result(5)
    pool.shutdown()
    return ran


def test_reads_waiting_get_the_next_free_thread_before_changes_that_came_first() -> None:
    arrivals = [("change-1", False), ("change-2", False), ("read-1", True), ("read-2", True)]
    assert served_in_order(1, arrivals) == ["read-1", "read-2", "change-1", "change-2"]


def test_after_reads_in_a_row_a_waiting_change_has_its_turn() -> None:
    reads = [(f"read-{n}", True) for n in range(READS_IN_A_ROW + 2)]
    ran = served_in_order(1, [("change", False), *reads])
    assert ran == [*(name for name, _ in reads[:READS_IN_A_ROW]), "change", "read-8", "read-9"]


def test_the_pool_runs_work_in_its_threads_and_its_futures_carry_results_and_errors() -> None:
    pool = LanePool(3)
    names = {pool.submit(lambda: threading.current_thread().name).result(5) for _ in range(30)}
    failed = pool.submit(lambda: 1 / 0, reads=True)
    assert names <= {"lane-pool-0", "lane-pool-1", "lane-pool-2"}
    assert isinstance(failed.exception(5), ZeroDivisionError)
    pool.shutdown()
    assert not any(
        thread.is_alive() for thread in threading.enumerate() if thread.name.startswith("lane-pool")
    )
    with pytest.raises(RuntimeError):
        pool.submit(print)


def test_a_pool_shut_down_without_waiting_still_runs_what_was_queued_unless_cancelled() -> None:
    pool = LanePool(1)
    release = threading.Event()
    pool.submit(release.wait, 5)
    queued = pool.submit(lambda: "done")
    pool.shutdown(wait=False)
    release.set()
    assert queued.result(5) == "done"

    pool = LanePool(1)
    release = threading.Event()
    pool.submit(release.wait, 5)
    dropped = pool.submit(lambda: "never", reads=True)
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    pool.shutdown()
    assert dropped.cancelled()
