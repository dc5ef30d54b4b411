"""isvserver's benchmark: the one command.

    ./scripts/bench-setup && .venv/bin/python bench/run.py [--workers N] [--duration S]
        [--connections C] [--db sqlite,postgres] [--large 1000000]

For each database (a fresh SQLite file in a temp dir; a throwaway PostgreSQL cluster put back on
PostgreSQL's durable defaults) it migrates two databases, seeds one with 1 000 and one with 1 000 000
provisioned instances (sealed passwords, their events), starts `isvserver serve` on each
(ISV_ENV=production, config/gunicorn.conf.py, N workers) and the bare Flask route of
bench/bare_app.py under the same gunicorn config and worker count, then drives each scenario with
wrk from a separate process. Every signed request is pre-signed with a fresh nonce and a timestamp
inside the window (ISV_SIGNATURE_TOLERANCE, default 300 s, covers signing → end of the run) and sent
at most once (bench/presigned.lua); afterwards the answers counted by wrk and the server's own
callback_log both prove that no request was refused as a replay.

Prints: scenario, db, stored instances, requests/s, p50, p99, ratio to the bare route, non-000000
answers, the load seen; the 1 000 vs 1 000 000 comparison; the statements of one 100-id query; and
which targets are met.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
from benchlib import ROOT, Keys, RequestMaker

VENV_BIN = Path(sys.executable).parent
LUA = ROOT / "bench" / "presigned.lua"
# Optimistic first guesses of requests/s, only to size the warm-up's pre-signed file.
GUESS_RPS = {"bare": 3000, "query1": 2500, "query100": 600, "new": 1500}
TARGETS = {"query_ratio": 0.5, "new_ratio": 0.3, "p99_ms": 50.0, "large_vs_small": 1.2}


# --- machine and load ---------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """What the figures were measured on."""

    def first(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    import sqlite3

    import gunicorn
    import peewee

    pg = benchlib.load_postgres_support().find_pg_bin()
    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "os": first(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "gunicorn": gunicorn.__version__,
        "peewee": peewee.__version__,
        "sqlite": sqlite3.sqlite_version,
        "postgresql": first([str(pg / "postgres"), "--version"]) if pg else "not installed",
        "wrk": first(["wrk", "-v"]),
    }


TICKS = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid → (ppid, utime+stime ticks) of every process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            fields = text[text.rfind(")") + 2 :].split()
            table[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def _descendant_ticks(roots: list[int]) -> int:
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo, total = set(), [r for r in roots if r in table], 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += table[pid][1]
        todo.extend(children.get(pid, []))
    return total


def _busy_ticks() -> int:
    parts = Path("/proc/stat").read_text().split("\n")[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in parts[:7])
    return user + nice + system + irq + softirq


@dataclass
class CpuWatch:
    """Busy CPU on the machine during a run, split into ours (servers, PostgreSQL, wrk, this process)
    and everybody else's (the other engineers' tests): cores = ticks / TICKS / seconds."""

    roots: list[int]
    started: float = 0.0
    busy0: int = 0
    ours0: int = 0

    def _ours(self) -> int:
        self_ru = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once reaped
        own = (self_ru.ru_utime + self_ru.ru_stime + kids.ru_utime + kids.ru_stime) * TICKS
        return int(own) + _descendant_ticks(self.roots)

    def start(self) -> None:
        self.started, self.busy0, self.ours0 = time.monotonic(), _busy_ticks(), self._ours()

    def stop(self) -> tuple[float, float]:
        """(our cores, others' cores) averaged over the run."""
        seconds = max(time.monotonic() - self.started, 1e-6)
        busy, ours = _busy_ticks() - self.busy0, self._ours() - self.ours0
        return ours / TICKS / seconds, max(busy - ours, 0) / TICKS / seconds


# --- servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_server(name: str, argv: list[str], env: dict[str, str], log: Path) -> Server:
    """Start a gunicorn (its own session, so it can be stopped as a group) and wait until it answers."""
    port = free_port()
    argv = [a.replace("{bind}", f"127.0.0.1:{port}") for a in argv]
    handle = log.open("ab")
    process = subprocess.Popen(
        argv, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
    )
    handle.close()
    server = Server(name, port, process, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited ({process.returncode}); see {log}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{server.url}/healthz", timeout=2) as answer,  # noqa: S310
        ):
            if answer.status == 200:
                return server
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"{name} did not answer /healthz within 60 s; see {log}")


def stop_server(server: Server) -> None:
    """SIGTERM the gunicorn master we started (graceful drain), SIGKILL its group if it lingers."""
    process = server.process
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def isvserver_argv(workers: int, code: Path) -> list[str]:
    return [
        str(VENV_BIN / "isvserver"),
        "serve",
        "--bind",
        "{bind}",
        "--workers",
        str(workers),
        "--config",
        str(code / "config" / "gunicorn.conf.py"),
    ]


def _bench_app_argv(workers: int, code: Path, target: str) -> list[str]:
    """gunicorn with isvserver's config serving `target` from bench/."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(code / "config" / "gunicorn.conf.py"),
        "--bind",
        "{bind}",
        "--workers",
        str(workers),
        "--pythonpath",
        str(ROOT / "bench"),
        target,
    ]


def patched_argv(workers: int, code: Path) -> list[str]:
    """isvserver's app with bench/patches.py's simulated fixes (ISV_BENCH_PATCHES), same gunicorn config."""
    return _bench_app_argv(workers, code, "patched_app:create_app()")


def bare_argv(workers: int, code: Path) -> list[str]:
    """The bare Flask route, same gunicorn config."""
    return _bench_app_argv(workers, code, "bare_app:app")


# --- wrk ----------------------------------------------------------------------------------------


@dataclass
class Run:
    """One wrk run as measured."""

    db: str
    scenario: str
    instances: int
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    requests: int
    codes: dict[str, int]
    errors: dict[str, int]
    no_code: int
    exhausted: int
    presigned: int
    load1: float
    ours_cores: float
    others_cores: float
    waited_s: float = 0.0
    ratio: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def bad_answers(self) -> int:
        return sum(n for c, n in self.codes.items() if c != "000000") + self.no_code


def wrk(
    server: Server, file: Path, wrap: bool, seconds: float, args: argparse.Namespace, watch: CpuWatch
) -> tuple[dict[str, Any], float, float, float]:
    threads = min(args.threads, args.connections)
    cmd = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(args.connections),
        "-d",
        f"{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        server.url,
        "--",
        str(file),
        str(threads),
        "1" if wrap else "0",
    ]
    load1 = os.getloadavg()[0]
    watch.start()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, cwd=ROOT)
    ours, others = watch.stop()
    match = re.search(r"^BENCHJSON (\{.*\})$", out.stdout, re.M)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    return json.loads(match.group(1)), load1, ours, others


def wait_for_quiet(args: argparse.Namespace, watch: CpuWatch) -> float:
    """Wait (at most --quiet-wait s) until others use less than --quiet-cores over one second."""
    began = time.monotonic()
    while time.monotonic() - began < args.quiet_wait:
        watch.start()
        time.sleep(1)
        if watch.stop()[1] < args.quiet_cores:
            break
    return time.monotonic() - began


def measure(
    db: str,
    scenario: str,
    server: Server,
    instances: int,
    maker: RequestMaker,
    args: argparse.Namespace,
    work: Path,
    watch: CpuWatch,
) -> Run:
    """Warm up, size the pre-signed file from the warm-up's rate, run; repeat with more if it ran dry."""
    wrap = scenario == "bare"
    waited = wait_for_quiet(args, watch)
    file = work / f"{db}-{scenario}-{instances}.req"
    kind = "query1" if scenario == "bare" else scenario
    count = int(GUESS_RPS[scenario] * args.warmup) + 200
    maker.write(file, kind, count)
    result, *_ = wrk(server, file, wrap, args.warmup, args, watch)
    seconds = result["duration_us"] / 1e6
    rate = result["codes"]["000000"] / seconds
    if result["exhausted"]:
        rate = max(rate, result["sent_from_file"] / seconds) * 3
    count = int(rate * args.duration * 2) + 1000
    for attempt in range(3):
        if wrap:
            count = min(count, 50_000)
        oldest = maker.write(file, kind, count)
        result, load1, ours, others = wrk(server, file, wrap, args.duration, args, watch)
        age = time.time() - oldest
        if age > args.tolerance - 5:
            raise RuntimeError(
                f"{scenario}: oldest timestamp {age:.0f} s old, over the window; raise --tolerance"
            )
        if not result["exhausted"] or wrap:
            break
        print(
            f"  {scenario}: {count} pre-signed requests ran out (attempt {attempt + 1}); doubling", flush=True
        )
        count *= 2
    else:
        raise RuntimeError(f"{scenario}: pre-signed requests ran out three times")
    file.unlink(missing_ok=True)
    lat = result["latency_us"]
    seconds = result["duration_us"] / 1e6
    run = Run(
        db=db,
        scenario=scenario,
        instances=instances,
        rps=result["requests"] / seconds,
        p50_ms=lat["p50"] / 1000,
        p99_ms=lat["p99"] / 1000,
        mean_ms=lat["mean"] / 1000,
        max_ms=lat["max"] / 1000,
        requests=result["requests"],
        codes=result["codes"],
        errors=result["errors"],
        no_code=result["no_code"],
        exhausted=result["exhausted"],
        presigned=count,
        load1=load1,
        ours_cores=ours,
        others_cores=others,
        waited_s=waited,
    )
    print(
        f"  {db:8} {scenario:9} {instances:>9,} inst  {run.rps:8.1f} req/s  p50 {run.p50_ms:7.2f} ms  "
        f"p99 {run.p99_ms:7.2f} ms  non-000000 {run.bad_answers}  errors {sum(run.errors.values())}  "
        f"load1 {load1:.2f}  cores ours {ours:.2f} others {others:.2f}",
        flush=True,
    )
    return run


# --- the 100-id query, in-process ---------------------------------------------------------------


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.statements: list[str] = []
        self.checkouts = 0  # connections taken from peewee's pool ("Returning … to pool" when given back)

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.msg
        if isinstance(msg, tuple):
            self.statements.append(msg[0])
        elif str(msg).startswith("Returning"):
            self.checkouts += 1


def sql_of_query100(
    database_url: str, keys: Keys, instances: int, tolerance: int, work: Path
) -> dict[str, Any]:
    """Send one signed 100-id queryInstance to the app in-process and list peewee's statements."""
    from isvserver import create_app, db
    from isvserver.settings import load_settings

    env = benchlib.server_env(keys, database_url, work / "inproc-instance", tolerance)
    env["ISV_LOG_LEVEL"] = "WARNING"  # no call log line on the terminal (the callback_log row is written)
    app = create_app(load_settings(env))
    maker = RequestMaker(keys.access, instances)
    target, body = maker.line("query100").rstrip("\n").split("\t", 1)
    logger = logging.getLogger("peewee")
    capture = _Capture()
    old_level = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    try:
        answer = app.test_client().post(target, data=body.encode(), content_type="application/json")
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)
        db.close_all()
    reply = answer.get_json()
    on_instance = [s for s in capture.statements if re.search(r'FROM "instance"', s)]
    return {
        "result_code": reply.get("resultCode"),
        "ids_answered": len(reply.get("info") or []),
        "statements": capture.statements,
        "instance_selects": len(on_instance),
        "pool_checkouts": capture.checkouts,
    }


# --- databases ----------------------------------------------------------------------------------


@contextlib.contextmanager
def databases(kind: str, work: Path) -> Iterator[tuple[str, str, list[int], dict[str, str]]]:
    """(small URL, large URL, pids whose trees are ours, notes) of a fresh database pair."""
    if kind == "sqlite":
        folder = work / "sqlite"
        folder.mkdir()
        yield (
            f"sqlite:///{folder / 'small.sqlite3'}",
            f"sqlite:///{folder / 'large.sqlite3'}",
            [],
            {
                "journal_mode": "wal (isvserver's)",
                "synchronous": "full (isvserver's)",
            },
        )
        return
    pg = benchlib.load_postgres_support()
    if (reason := pg.unavailable_reason()) is not None:
        raise RuntimeError(f"PostgreSQL unavailable: {reason}; run ./scripts/bench-setup")
    with pg.PostgresServer(work / "pg") as server:
        settings = benchlib.make_pg_durable(server)
        small, large = server.create_database("bench_small"), server.create_database("bench_large")
        pid = int((server.data_dir / "postmaster.pid").read_text().split("\n")[0])
        yield small, large, [pid], settings


def bench_database(kind: str, args: argparse.Namespace, keys: Keys, work: Path) -> dict[str, Any]:
    print(f"\n== {kind} ==", flush=True)
    report: dict[str, Any] = {"db": kind, "runs": []}
    with databases(kind, work) as (small_url, large_url, pg_roots, db_notes):
        report["db_settings"] = db_notes
        sealed = benchlib.sealed_password(keys.data)
        for url in (small_url, large_url):
            benchlib.migrate(url)
        report["seed_small_s"] = benchlib.seed(small_url, 0, args.small, sealed)
        print(f"  seeded {args.small:,} instances in {report['seed_small_s']:.1f} s", flush=True)
        report["seed_large_s"] = benchlib.seed(large_url, 0, args.large, sealed)
        print(f"  seeded {args.large:,} instances in {report['seed_large_s']:.1f} s", flush=True)

        logs = work / "logs"
        logs.mkdir(exist_ok=True)
        servers: list[Server] = []
        try:
            env_small = benchlib.server_env(keys, small_url, work / f"{kind}-inst-s", args.tolerance)
            env_large = benchlib.server_env(keys, large_url, work / f"{kind}-inst-l", args.tolerance)
            for env in (env_small, env_large):
                env["PYTHONPATH"] = str(args.code_dir)
            argv = isvserver_argv(args.workers, args.code_dir)
            if args.patch:
                argv = patched_argv(args.workers, args.code_dir)
                env_small["ISV_BENCH_PATCHES"] = env_large["ISV_BENCH_PATCHES"] = args.patch
            small = start_server("isvserver-1k", argv, env_small, logs / f"{kind}-small.log")
            servers.append(small)
            large = start_server("isvserver-1M", argv, env_large, logs / f"{kind}-large.log")
            servers.append(large)
            # Its own instance dir: config/gunicorn.conf.py empties ISV_INSTANCE_DIR/metrics at start.
            env_bare = benchlib.server_env(keys, small_url, work / f"{kind}-inst-bare", args.tolerance)
            env_bare["PYTHONPATH"] = str(args.code_dir)
            bare = start_server(
                "bare", bare_argv(args.workers, args.code_dir), env_bare, logs / f"{kind}-bare.log"
            )
            servers.append(bare)
            watch = CpuWatch([*(s.process.pid for s in servers), *pg_roots])
            small_maker = RequestMaker(keys.access, args.small)
            large_maker = RequestMaker(keys.access, args.large)
            # The bare route runs between the signed scenarios: each ratio divides by the mean of the
            # bare runs right before and after it, so a change in the machine's load hits both sides.
            # queryInstance at 1 000 and at 1 000 000 instances runs A-B-B-A, so that a drift of the
            # machine's load over the minute weighs on both sides alike; the comparison uses the means.
            plan = [
                ("bare", bare, args.small, small_maker),
                ("query1", small, args.small, small_maker),
                ("query1", large, args.large, large_maker),
                ("bare", bare, args.small, small_maker),
                ("query1", large, args.large, large_maker),
                ("query1", small, args.small, small_maker),
                ("bare", bare, args.small, small_maker),
                ("query100", small, args.small, small_maker),
                ("query100", large, args.large, large_maker),
                ("bare", bare, args.small, small_maker),
                ("new", small, args.small, small_maker),
                ("bare", bare, args.small, small_maker),
            ]
            if args.scenarios != "all":
                # Only the named scenarios, in the same order and still between bare runs.
                wanted = {"bare", *(n.strip() for n in args.scenarios.split(","))}
                kept = [step for step in plan if step[0] in wanted]
                plan = [s for i, s in enumerate(kept) if not (s[0] == "bare" == kept[i - 1][0] and i)]
            for scenario, server, instances, maker in plan:
                report["runs"].append(measure(kind, scenario, server, instances, maker, args, work, watch))
                time.sleep(1)
        finally:
            for server in servers:
                stop_server(server)
        report["callback_log"] = {
            "small": benchlib.callback_summary(small_url),
            "large": benchlib.callback_summary(large_url),
        }
        report["sql_query100"] = sql_of_query100(small_url, keys, args.small, args.tolerance, work)
        report["instances_after"] = {
            "small": benchlib.count_instances(small_url),
            "large": benchlib.count_instances(large_url),
        }
    return report


# --- report -------------------------------------------------------------------------------------


def mean_run(runs: list[Run]) -> Run:
    """A run whose figures are the means of `runs` (the A-B-B-A queryInstance runs)."""
    first = runs[0]
    n = len(runs)
    return Run(
        **{
            **asdict(first),
            "rps": sum(r.rps for r in runs) / n,
            "p50_ms": sum(r.p50_ms for r in runs) / n,
            "p99_ms": sum(r.p99_ms for r in runs) / n,
            "ratio": sum(r.ratio or 0 for r in runs) / n,
        }
    )


def summarise(reports: list[dict[str, Any]], info: dict[str, str], args: argparse.Namespace) -> list[str]:
    lines = []
    out = lines.append
    out("")
    out(f"machine: {info['cpus']} x {info['cpu_model']}, {info['memory']}, Linux {info['kernel']}")
    out(f"os: {info['os']}")
    out(
        f"software: Python {info['python']}, gunicorn {info['gunicorn']}, peewee {info['peewee']}, "
        f"SQLite {info['sqlite']}, {info['postgresql']}, {info['wrk']}"
    )
    out(f"isvserver: {info['code']}")
    if args.patch:
        out(f"isvserver served WITH SIMULATED FIXES (bench/patches.py): {args.patch}")
    out(
        f"settings: {args.workers} workers (config/gunicorn.conf.py), wrk {args.threads} threads, "
        f"{args.connections} connections, {args.duration:g} s per scenario after {args.warmup:g} s warm-up"
    )
    out("")
    head = (
        f"| {'db':8} | {'scenario':22} | {'instances':>9} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} "
        f"| {'vs bare':>7} | {'non-000000':>10} | {'load1':>5} | {'others':>6} |"
    )
    out(head)
    out("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    names = {
        "bare": "bare Flask route",
        "query1": "queryInstance 1 id",
        "query100": "queryInstance 100 ids",
        "new": "newInstance",
    }
    verdicts = []
    for report in reports:
        runs: list[Run] = report["runs"]
        for i, r in enumerate(runs):
            if r.scenario == "bare":
                ratio = "-"
            else:
                before = next(x for x in reversed(runs[:i]) if x.scenario == "bare")
                after = next((x for x in runs[i + 1 :] if x.scenario == "bare"), before)
                r.ratio = r.rps / ((before.rps + after.rps) / 2)
                ratio = f"{r.ratio:.0%}"
            out(
                f"| {r.db:8} | {names[r.scenario]:22} | {r.instances:>9,} | {r.rps:>8.1f} | {r.p50_ms:>7.2f} "
                f"| {r.p99_ms:>7.2f} | {ratio:>7} | {r.bad_answers:>10} | {r.load1:>5.2f} "
                f"| {r.others_cores:>6.2f} |"
            )
        if args.scenarios != "all":
            continue  # the verdicts need every scenario
        db = report["db"]
        get = {(r.scenario, r.instances): r for r in runs if r.scenario != "bare"}  # the last of each
        q_small = mean_run([r for r in runs if r.scenario == "query1" and r.instances == args.small])
        q_large = mean_run([r for r in runs if r.scenario == "query1" and r.instances == args.large])
        q100, new = get[("query100", args.small)], get[("new", args.small)]
        slow = [r for r in runs if r.scenario != "bare" and r.p99_ms > TARGETS["p99_ms"]]
        p50x, p99x = q_large.p50_ms / q_small.p50_ms, q_large.p99_ms / q_small.p99_ms
        sql = report["sql_query100"]
        replays = sum(
            n
            for (_a, verdict, _c, n) in report["callback_log"]["small"] + report["callback_log"]["large"]
            if verdict == "replayed_nonce"
        )
        not_ok = sum(
            n
            for (_a, _v, code, n) in report["callback_log"]["small"] + report["callback_log"]["large"]
            if code != "000000"
        )
        pool = f", {sql['pool_checkouts']} pool check-outs" if db == "postgres" else ""
        failed_rows = [
            f"{activity}/{verdict}/{code} x{n}"
            for part in ("small", "large")
            for (activity, verdict, code, n) in report["callback_log"][part]
            if code != "000000"
        ]
        verdicts += [
            f"[{db}] signed queryInstance (1 id, mean of 2 runs) >= 50% of bare: {q_small.ratio:.0%} -> "
            f"{'MET' if q_small.ratio >= TARGETS['query_ratio'] else 'MISSED'}"
            f" (100 ids: {q100.ratio:.0%})",
            f"[{db}] newInstance >= 30% of bare: {new.ratio:.0%} -> "
            f"{'MET' if new.ratio >= TARGETS['new_ratio'] else 'MISSED'}",
            f"[{db}] p99 <= 50 ms at {args.connections} connections: "
            + (
                "MET"
                if not slow
                else "MISSED by "
                + ", ".join(f"{names[r.scenario]}@{r.instances:,} ({r.p99_ms:.1f} ms)" for r in slow)
            ),
            f"[{db}] queryInstance at {args.large:,} within 1.2x of {args.small:,}: p50 {p50x:.2f}x, "
            f"p99 {p99x:.2f}x, req/s {q_large.rps / q_small.rps:.2f}x -> "
            f"{'MET' if p50x <= TARGETS['large_vs_small'] else 'MISSED'} (on p50)",
            f"[{db}] a 100-id query is one SQL query: {sql['instance_selects']} SELECT on instance "
            f"({sql['ids_answered']} ids answered, {sql['result_code']}; {len(sql['statements'])} statements "
            f"in the whole request{pool}) -> {'MET' if sql['instance_selects'] == 1 else 'MISSED'}",
            f"[{db}] no replays: wrk saw {sum(r.bad_answers for r in runs)} non-000000 answers, "
            f"{sum(sum(r.errors.values()) for r in runs)} socket/HTTP errors; callback_log: "
            f"{replays} replayed_nonce, {not_ok} non-000000 rows"
            + (f" ({', '.join(failed_rows)})" if failed_rows else "")
            + f" -> {'OK' if replays == 0 and not_ok == 0 else 'PROBLEM'}",
            f"[{db}] seeding: {args.small:,} in {report['seed_small_s']:.1f} s, {args.large:,} in "
            f"{report['seed_large_s']:.1f} s (instances + 2 events each)",
        ]
    out("")
    out("vs bare = req/s over the mean of the bare runs right before and after. load1 = 1-min load average")
    out("when the run started (includes our previous run); others = CPU cores busy with processes other")
    out("than the benchmark's (servers, PostgreSQL, wrk, this script) during the run: other people's load.")
    out("")
    lines += verdicts
    for report in reports:
        out("")
        out(f"[{report['db']}] statements of one signed 100-id queryInstance (peewee log, in-process):")
        for s in report["sql_query100"]["statements"]:
            out(f"    {s[:150]}{'…' if len(s) > 150 else ''}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers of every server (3)")
    parser.add_argument("--duration", type=float, default=15, help="seconds per scenario (15)")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up seconds before each scenario (3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite,postgres (both)")
    parser.add_argument("--small", type=int, default=1000, help="instances of the small database (1000)")
    parser.add_argument("--large", type=int, default=1_000_000, help="instances of the large one (1000000)")
    parser.add_argument("--tolerance", type=int, default=300, help="ISV_SIGNATURE_TOLERANCE seconds (300)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=20,
        help="before each run, wait up to this many seconds for the machine to be quiet (20)",
    )
    parser.add_argument(
        "--quiet-cores",
        type=float,
        default=0.5,
        help="quiet = other processes busy on fewer cores than this over 1 s (0.5)",
    )
    parser.add_argument(
        "--patch",
        default="",
        help="serve isvserver with simulated fixes from bench/patches.py (comma-separated)",
    )
    parser.add_argument(
        "--code",
        default="worktree",
        help="what to measure: the working tree as it is at start (default), or a commit (HEAD, a hash)",
    )
    parser.add_argument(
        "--scenarios",
        default="all",
        help="all, or some of query1,query100,new (each run between two bare runs; the 1 000 vs "
        "1 000 000 comparison needs query1)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.db.split(",") if k.strip()]
    if not kinds or any(k not in ("sqlite", "postgres") for k in kinds):
        parser.error("--db takes sqlite, postgres or sqlite,postgres")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed: run ./scripts/bench-setup")

    info = machine()
    print(
        f"isvserver benchmark: {args.workers} workers, {args.connections} connections, "
        f"{args.duration:g} s per scenario, databases {', '.join(kinds)}",
        flush=True,
    )
    print(f"uptime at start: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)  # stop our servers and clean up, as on Ctrl-C
    signal.signal(signal.SIGINT, interrupted)  # also when started in the background (SIGINT ignored)
    keys = Keys.fresh()
    work = Path(tempfile.mkdtemp(prefix="isvbench-"))
    os.chmod(work, 0o755)  # noqa: S103 (PostgreSQL's user must reach its cluster below it)
    reports = []
    try:
        args.code_dir, info["code"] = benchlib.snapshot_code(work, args.code)
        sys.path.insert(0, str(args.code_dir))  # the in-process check and the migrations use it too
        print(f"code measured: {info['code']}", flush=True)
        for kind in kinds:
            reports.append(bench_database(kind, args, keys, work))
        lines = summarise(reports, info, args)
        print("\n".join(lines))
        print(f"\nuptime at end: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
        if args.json:
            data = {
                "machine": info,
                "args": {k: str(v) for k, v in vars(args).items()},
                "reports": [{**r, "runs": [asdict(x) for x in r["runs"]]} for r in reports],
            }
            args.json.write_text(json.dumps(data, indent=2, default=str))
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
