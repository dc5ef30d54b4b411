"""Slow and idle clients against a real `isvserver serve` with the shipped gunicorn configuration.

200 loopback connections that send nothing, or trickle a request head or body a byte a second, are
held for 60 s (each one the server drops is opened again at once) while a signed newInstance is sent
every 0.25 s on a connection of its own. With gunicorn's sync worker three such connections stop
every call for about 30 s and get every worker killed (bench/slow_clients.py --worker-class sync
shows it; figures in docs/benchmarks.md).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from support.harness import base_env
from support.server import live_processes, running_server, subprocess_env
from support.slow_clients import KINDS, SlowClients, TimedCall, percentile, timed_calls

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SLOW_CONNECTIONS = 200
HOLD_S = 60.0
BOUND_S = 1.0
WORKERS = 3
ACK = ("000000", "000004")


def workers_of(master: int) -> set[int]:
    """The master's live worker processes (not the job consumer)."""
    pids = set()
    for pid, _, fields in live_processes():
        if int(fields[1]) == master:
            try:
                supervised = b"--supervised" in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if not supervised:
                pids.add(pid)
    return pids


@pytest.mark.faults
def test_200_slow_and_idle_connections_for_60_s_delay_no_call_over_1_s(tmp_path: Path) -> None:
    """While 200 idle or trickling connections are held for 60 s, every signed call is answered (a
    signed 000000) within 1 s, and no worker is killed or replaced."""
    url = f"sqlite:///{tmp_path / 'isvserver.sqlite3'}"
    env = subprocess_env(base_env(tmp_path, url))
    with running_server(env, tmp_path / "server.log", cwd=tmp_path, workers=WORKERS) as server:
        before = workers_of(server.pid)
        assert len(before) == WORKERS, before
        log_before = server.read_log()
        clients = SlowClients(server.port, count=SLOW_CONNECTIONS, hold_s=HOLD_S)
        stop = threading.Event()
        calls: list[TimedCall] = []
        caller = threading.Thread(target=lambda: calls.extend(timed_calls(server, stop)), daemon=True)
        clients.start()
        started = time.monotonic()
        caller.start()
        least_held = SLOW_CONNECTIONS
        try:
            while clients._thread is not None and clients._thread.is_alive():
                least_held = min(least_held, clients.held())
                time.sleep(0.5)
        finally:
            stop.set()
            caller.join(60)
            clients.stop()
        held_for = time.monotonic() - started
        after = workers_of(server.pid)
        log = server.read_log()[len(log_before) :]

    assert clients.error is None, f"the slow clients failed: {clients.error!r}"
    # The fault happened: 200 connections of every kind were held the whole time.
    assert held_for >= HOLD_S, f"held for {held_for:.1f} s only"
    assert least_held >= SLOW_CONNECTIONS - 10, f"only {least_held} slow connections held at one point"
    assert all(clients.opened[kind] >= SLOW_CONNECTIONS // len(KINDS) for kind in KINDS), clients.opened
    assert len(calls) >= HOLD_S / 0.25 * 0.8, f"only {len(calls)} signed calls were sent"

    seconds = [c.seconds for c in calls]
    slow = [c for c in calls if c.seconds > BOUND_S]
    wrong = [c for c in calls if not (c.status == 200 and c.signed_ok and c.code in ACK)]
    summary = (
        f"{len(calls)} signed calls, latency p50 {percentile(seconds, 0.5):.3f} s, "
        f"p99 {percentile(seconds, 0.99):.3f} s, max {max(seconds):.3f} s; slow connections opened "
        f"{dict(clients.opened)}, dropped by the server {dict(clients.closed_by_server)}"
    )
    assert not wrong, f"{len(wrong)} calls not answered with a signed 000000: {wrong[:5]} ({summary})"
    assert not slow, f"{len(slow)} calls took over {BOUND_S} s: {slow[:5]} ({summary})"
    # No worker killed: the same processes before and after, and the master never timed one out.
    assert after == before, f"workers {sorted(before)} became {sorted(after)}"
    for sign in ("WORKER TIMEOUT", "was sent SIG", "Booting worker", "Worker exiting"):
        assert sign not in log, f"{sign!r} in the server log:\n{log[-3000:]}"
    print(f"slow clients: {SLOW_CONNECTIONS} held {held_for:.0f} s; {summary}")


@pytest.mark.faults
def test_before_gunicorns_sync_worker_lets_the_same_clients_starve_every_call(tmp_path: Path) -> None:
    """The before of the test above, so it is known to fail without the shipped worker: gunicorn's own
    sync worker (the shipped configuration with `worker_class = "sync"` at its end), the same 200
    connections held 8 s: signed calls wait far over 1 s or are never answered."""
    conf = tmp_path / "sync.conf.py"
    conf.write_text(
        (ROOT / "config" / "gunicorn.conf.py").read_text(encoding="utf-8")
        + 'worker_class = "sync"\nthreads = 1\n',
        encoding="utf-8",
    )
    url = f"sqlite:///{tmp_path / 'isvserver.sqlite3'}"
    env = subprocess_env(base_env(tmp_path, url))
    serve_args = ("--config", str(conf))
    with running_server(
        env, tmp_path / "server.log", cwd=tmp_path, workers=WORKERS, serve_args=serve_args
    ) as server:
        clients = SlowClients(server.port, count=SLOW_CONNECTIONS, hold_s=8.0)
        stop = threading.Event()
        calls: list[TimedCall] = []
        caller = threading.Thread(target=lambda: calls.extend(timed_calls(server, stop)), daemon=True)
        clients.start()
        time.sleep(1.0)  # the slow connections are in before the first signed call is timed
        caller.start()
        try:
            while clients._thread is not None and clients._thread.is_alive():
                time.sleep(0.2)
        finally:
            held_until = time.monotonic()
            stop.set()
            caller.join(60)
            clients.stop()

    # A call sent while the connections were held waits for their release (or is never answered).
    during = [c for c in calls if c.started < held_until - 2 * BOUND_S]
    starved = [c for c in during if c.seconds > BOUND_S or not (c.status == 200 and c.signed_ok)]
    assert during, f"no signed call was sent while the connections were held: {calls}"
    assert starved == during, f"the sync worker answered calls in time: {during}"
    print(f"sync worker: {len(starved)} of {len(during)} signed calls over {BOUND_S} s or unanswered")
