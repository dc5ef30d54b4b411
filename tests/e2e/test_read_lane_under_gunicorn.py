"""The read lane on real gunicorn with the shipped worker: a read that arrives while changes wait for the
only thread is answered before them, and a change still has its turn after READS_IN_A_ROW reads.

The app here is a small WSGI app with a judge of its own (any WSGI app may give one): its judge notes
each request it is shown (the worker shows every request once it is whole), so the test knows when
every request waits in a lane; the app notes the order it answers them in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from isvserver.web.lane_pool import READS_IN_A_ROW

from support.server import http_request, running_gunicorn, subprocess_env, wait_until

pytestmark = pytest.mark.e2e

APP = """
import os
import time
from pathlib import Path

JUDGED = Path(os.environ["LANE_JUDGED"])
SERVED = Path(os.environ["LANE_SERVED"])
GATE = Path(os.environ["LANE_GATE"])


def note(path, line):
    with path.open("a") as out:
        out.write(line + "\\n")


def judge(arrival):
    note(JUDGED, arrival.path)
    return arrival.method == "GET"


def app(environ, start_response):
    path = environ["PATH_INFO"]
    while path == "/hold" and not GATE.exists():
        time.sleep(0.01)
    note(SERVED, path)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


app.extensions = {"isvserver.reads": judge}
"""


class LaneServer:
    """Where the app notes what it judged and served, and the gate that holds /hold."""

    def __init__(self, work: Path, base: str) -> None:
        self.judged, self.served, self.gate = (work / n for n in ("judged", "served", "gate"))
        self.base = base

    def lines(self, path: Path) -> list[str]:
        return path.read_text().split() if path.exists() else []

    def call(self, method: str, path: str) -> int:
        return http_request(self.base, method, path, b"{}" if method == "POST" else None).status


@pytest.fixture
def lane_server(tmp_path: Path) -> Iterator[LaneServer]:
    """gunicorn with the shipped worker, one worker of one thread, serving the app above."""
    (tmp_path / "lane_app.py").write_text(APP)
    notes = {f"LANE_{n.upper()}": str(tmp_path / n) for n in ("judged", "served", "gate")}
    options = (
        "--worker-class",
        "isvserver.web.worker.BufferedThreadWorker",
        "--workers",
        "1",
        "--threads",
        "1",
    )
    env = subprocess_env(notes)
    with running_gunicorn("lane_app:app", tmp_path, tmp_path / "gunicorn.log", env, *options) as base:
        yield LaneServer(tmp_path, base)


def test_reads_arriving_behind_changes_are_answered_before_them(lane_server: LaneServer) -> None:
    """The only thread is held; 3 changes then READS_IN_A_ROW + 2 reads arrive; when the thread is free,
    READS_IN_A_ROW reads go first, then the oldest change, then the rest in their lanes' order."""
    reads = READS_IN_A_ROW + 2
    order = [("POST", "/hold"), *((("POST", f"/change-{n}")) for n in range(3))]
    order += [("GET", f"/read-{n}") for n in range(reads)]
    statuses: dict[str, int] = {}
    threads = []
    for count, (method, path) in enumerate(order, start=1):
        thread = threading.Thread(
            target=lambda m=method, p=path: statuses.update({p: lane_server.call(m, p)})
        )
        thread.start()
        threads.append(thread)
        # one at a time into the worker's lanes, so that their order there is the order sent
        assert wait_until(lambda n=count: len(lane_server.lines(lane_server.judged)) == n, 10)
    lane_server.gate.touch()
    for thread in threads:
        thread.join(30)

    assert set(statuses.values()) == {200} and len(statuses) == len(order)
    first_reads = [f"/read-{n}" for n in range(READS_IN_A_ROW)]
    later_reads = [f"/read-{n}" for n in range(READS_IN_A_ROW, reads)]
    assert lane_server.lines(lane_server.served) == [
        "/hold",
        *first_reads,
        "/change-0",
        *later_reads,
        "/change-1",
        "/change-2",
    ]
