"""Jobs.every: periodic jobs in seconds under a database lease, run in the app's context (SQLite and
PostgreSQL)."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

import pytest
from flask import Flask, current_app
from prometheus_client.parser import text_string_to_metric_families

from isvserver import create_app, db
from isvserver.jobs import Jobs, SafeError, periodic
from isvserver.models import Instance, PeriodicJob, utcnow
from isvserver.runtime import Runtime, runtime

WAIT_S = 10.0  # the deadline of every wait on an event


def jobs_of(app: Flask) -> Jobs:
    return app.extensions["isvserver"].jobs


def row(name: str) -> PeriodicJob:
    with db.connected():
        return PeriodicJob.get(PeriodicJob.name == name)


def test_a_job_runs_in_the_apps_context_with_its_runtime_and_a_connection(app: Flask) -> None:
    seen: list[tuple[object, ...]] = []

    def job(rt: Runtime) -> None:
        seen.append((current_app._get_current_object(), rt, runtime(), Instance.select().count()))

    jobs = jobs_of(app)
    jobs.every("probe", 60, job)

    assert jobs.run_periodic("probe") == 60.0
    assert seen == [(app, app.extensions["isvserver"], app.extensions["isvserver"], 0)]
    assert seen[0][1].lifecycle is app.extensions["isvserver"].lifecycle
    stored = row("probe")
    assert (stored.runs, stored.failures, stored.lease_owner, stored.lease_until) == (1, 0, None, None)
    assert stored.last_success_at is not None
    assert stored.next_run_at - stored.last_started_at == timedelta(seconds=60)


def test_a_job_not_due_yet_does_not_run_and_says_when_it_will_be(app: Flask) -> None:
    runs: list[int] = []
    jobs = jobs_of(app)
    jobs.every("probe", 30, lambda rt: runs.append(1))
    jobs.run_periodic("probe")

    wait = jobs.run_periodic("probe")

    assert runs == [1]
    assert 25 < wait <= 30


def test_a_live_holders_lease_keeps_others_out_and_a_dead_holders_expires(app: Flask) -> None:
    runs: list[int] = []
    jobs = jobs_of(app)
    jobs.every("probe", 5, lambda rt: runs.append(1), lease_s=60)
    with db.connected():
        periodic.ensure("probe", 5)
        assert periodic.acquire("probe", "dead-host:1:x", 60)  # a consumer that was then killed -9

    wait = jobs.run_periodic("probe")
    assert runs == []
    assert 55 < wait <= 60

    with db.connected():  # its lease runs out
        PeriodicJob.update(lease_until=utcnow() - timedelta(seconds=1)).execute()
    jobs.run_periodic("probe")
    assert runs == [1]
    assert row("probe").lease_owner is None
    with db.connected():
        assert not periodic.finish("probe", "dead-host:1:x", utcnow(), 5, None)  # it lost the lease


def test_two_consumers_at_once_run_one_job(app: Flask, settings) -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow(rt: Runtime) -> None:
        calls.append(threading.current_thread().name)
        started.set()
        release.wait(WAIT_S)

    first = jobs_of(app)
    first.every("poll", 60, slow)
    second = jobs_of(create_app(settings))  # another consumer, on the same database
    second.every("poll", 60, slow)

    runner = threading.Thread(target=first.run_periodic, args=("poll",), name="first")
    runner.start()
    assert started.wait(WAIT_S)
    assert second.run_periodic("poll") > 0  # held: it does not run
    release.set()
    runner.join(WAIT_S)
    assert second.run_periodic("poll") > 0  # done, and not due for a minute
    assert calls == ["first"]
    assert row("poll").runs == 1


def test_a_running_job_renews_its_lease(app: Flask) -> None:
    started, release = threading.Event(), threading.Event()
    jobs = jobs_of(app)

    def slow(rt: Runtime) -> None:
        started.set()
        release.wait(WAIT_S)

    jobs.every("long", 60, slow, lease_s=0.3)
    runner = threading.Thread(target=jobs.run_periodic, args=("long",))
    runner.start()
    assert started.wait(WAIT_S)
    first_until = row("long").lease_until
    deadline = utcnow() + timedelta(seconds=WAIT_S)
    while row("long").lease_until == first_until and utcnow() < deadline:
        release.wait(0.05)
    renewed = row("long")
    with db.connected():
        taken = periodic.acquire("long", "other:2:y", 60, now=first_until + timedelta(seconds=0.01))
    release.set()
    runner.join(WAIT_S)
    assert renewed.lease_until > first_until
    assert not taken  # past the first lease's end, the renewed lease still keeps others out
    assert row("long").runs == 1


def test_a_failing_run_is_counted_logged_and_tried_at_the_next_interval(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(rt: Runtime) -> None:
        raise SafeError("the platform answered 502")

    def secret(rt: Runtime) -> None:
        raise ValueError("password=hunter2")

    jobs = jobs_of(app)
    jobs.every("broken", 10, broken)
    jobs.every("secret", 10, secret)
    with caplog.at_level(logging.WARNING, logger="isvserver.jobs"):
        assert jobs.run_periodic("broken") == 10.0
        jobs.run_periodic("secret")

    stored = row("broken")
    assert (stored.runs, stored.failures, stored.last_success_at) == (1, 1, None)
    assert stored.last_error == "SafeError: the platform answered 502"
    assert stored.next_run_at - stored.last_started_at == timedelta(seconds=10)
    assert row("secret").last_error == "ValueError (details in the consumer's log)"
    messages = [r.getMessage() for r in caplog.records]
    assert "periodic job broken failed: SafeError: the platform answered 502" in messages
    assert all("hunter2" not in m for m in messages)


def test_every_refuses_a_bad_declaration(app: Flask) -> None:
    jobs = jobs_of(app)
    jobs.every("once", 1, lambda rt: None)
    with pytest.raises(ValueError, match="already registered"):
        jobs.every("once", 1, lambda rt: None)
    with pytest.raises(ValueError, match="more than 0 seconds"):
        jobs.every("never", 0, lambda rt: None)
    with pytest.raises(ValueError, match="lease"):
        jobs.every("leaseless", 1, lambda rt: None, lease_s=0)
    with pytest.raises(ValueError, match="1 to 64"):
        jobs.every("x" * 65, 1, lambda rt: None)


def test_jobs_of_no_app_refuse_to_run(settings) -> None:
    jobs = Jobs(settings, provisioner=None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="no app"), jobs.context():
        pass


def test_the_consumers_threads_run_jobs_at_their_interval_until_stopped(app: Flask) -> None:
    ran = threading.Semaphore(0)
    jobs = jobs_of(app)
    jobs.every("tick", 0.1, lambda rt: ran.release())

    jobs.start_periodic()
    try:
        assert all(ran.acquire(timeout=WAIT_S) for _ in range(3))
    finally:
        jobs.stop_periodic(WAIT_S)
    assert jobs._threads == []
    runs = row("tick").runs
    assert runs >= 3
    assert not ran.acquire(timeout=0.3)  # stopped: no run after
    assert row("tick").runs == runs


def test_a_look_that_cannot_reach_the_database_is_tried_again(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = jobs_of(app)
    ran = threading.Event()
    jobs.every("tick", 0.1, lambda rt: ran.set())
    failures = iter([True])

    def flaky(name: str, interval_s: float, now=None) -> None:
        if next(failures, False):
            raise ConnectionError("database down")
        real(name, interval_s, now)

    real = periodic.ensure
    monkeypatch.setattr(periodic, "ensure", flaky)
    monkeypatch.setattr("isvserver.jobs.DATABASE_RETRY_S", 0.05)
    with caplog.at_level(logging.WARNING, logger="isvserver.jobs"):
        jobs.start_periodic()
        try:
            assert ran.wait(WAIT_S)
        finally:
            jobs.stop_periodic(WAIT_S)
    assert "periodic job tick: cannot reach the database" in [r.getMessage() for r in caplog.records]


def test_metrics_show_each_jobs_runs_and_the_age_of_its_last_success(app: Flask, clock) -> None:
    jobs = jobs_of(app)
    jobs.every("good", 60, lambda rt: None)
    jobs.every("bad", 60, lambda rt: 1 / 0)
    jobs.run_periodic("good")
    jobs.run_periodic("bad")
    succeeded = row("good").last_success_at
    clock.now_ms = ((succeeded - datetime(1970, 1, 1)).total_seconds() + 42) * 1000

    text = app.test_client().get("/metrics").get_data(as_text=True)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("isv_periodic_job")
    }
    assert samples[("isv_periodic_job_runs_total", (("job", "good"), ("outcome", "ok")))] == 1
    assert samples[("isv_periodic_job_runs_total", (("job", "bad"), ("outcome", "failed")))] == 1
    assert samples[("isv_periodic_job_runs_total", (("job", "bad"), ("outcome", "ok")))] == 0
    assert samples[("isv_periodic_job_last_success_age_seconds", (("job", "good"),))] == pytest.approx(42)
    assert ("isv_periodic_job_last_success_age_seconds", (("job", "bad"),)) not in samples
