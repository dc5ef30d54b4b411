"""Profile isvserver's WSGI app in-process with pyinstrument, on the benchmark's own signed requests.

    .venv/bin/python bench/profile.py --db sqlite --scenario query1 [--requests 2000] [--html out.html]

A fresh database (SQLite file in a temp dir, or a throwaway PostgreSQL cluster on its durable
defaults) is migrated and seeded like bench/run.py's; the app is built with the same production
settings; the requests are pre-signed and turned into WSGI environs before profiling starts, so the
profile holds only the app's own work (wall-clock: fsync and lock waits show up). Prints the mean
time per request and pyinstrument's call tree.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
import patches
from benchlib import Keys, RequestMaker


@contextlib.contextmanager
def database(kind: str, work: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{work / 'profile.sqlite3'}"
        return
    pg = benchlib.load_postgres_support()
    with pg.PostgresServer(work / "pg") as server:
        benchlib.make_pg_durable(server)
        yield server.create_database("bench_profile")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--scenario", choices=("query1", "query100", "new"), default="query1")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=0.0005, help="sampling interval, s")
    parser.add_argument("--html", type=Path, help="also write pyinstrument's HTML report here")
    parser.add_argument("--code", default="worktree", help="worktree (default) or a commit, as bench/run.py")
    parser.add_argument("--patch", default="", help="simulated fixes from bench/patches.py, comma-separated")
    parser.add_argument("--show-all", action="store_true", help="show library frames too")
    parser.add_argument("--flat", type=int, default=0, help="also print the N functions with most self time")
    parser.add_argument("--no-profile", action="store_true", help="only time the requests")
    args = parser.parse_args()

    keys = Keys.fresh()
    work = Path(tempfile.mkdtemp(prefix="isvprofile-"))
    work.chmod(0o755)
    # As under gunicorn: metrics in multiprocess files (set before isvserver.metrics is imported) and
    # INFO call log lines (to a file here, not the terminal).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(work / "metrics")
    (work / "metrics").mkdir()
    code_dir, code = benchlib.snapshot_code(work, args.code)
    sys.path.insert(0, str(code_dir))
    print(f"code profiled: {code}", flush=True)

    from pyinstrument import Profiler
    from werkzeug.test import EnvironBuilder

    from isvserver import create_app, db
    from isvserver.settings import load_settings

    try:
        with database(args.db, work) as url:
            benchlib.migrate(url)
            benchlib.seed(url, 0, args.instances, benchlib.sealed_password(keys.data))
            env = benchlib.server_env(keys, url, work / "instance", 3600)
            names = patches.requested(args.patch)
            patches.apply_before_app(names)
            app = create_app(load_settings(env))
            patches.apply_to_app(app, names)
            app_log = (work / "app.log").open("w")
            for handler in logging.getLogger("isvserver").handlers:
                if isinstance(handler, logging.StreamHandler):
                    handler.setStream(app_log)
            maker = RequestMaker(keys.access, args.instances)
            environs = []
            for _ in range(args.requests + 50):
                target, body = maker.line(args.scenario).rstrip("\n").split("\t", 1)
                builder = EnvironBuilder(
                    path=target.split("?", 1)[0],
                    query_string=target.split("?", 1)[1],
                    method="POST",
                    data=body.encode(),
                    content_type="application/json;charset=utf8",
                )
                environs.append(builder.get_environ())
            codes: dict[str, int] = {}

            def call(environ: dict) -> None:
                chunks = app(environ, lambda status, headers, exc_info=None: None)
                data = b"".join(chunks)
                code = data[data.find(b'"resultCode":"') + 14 :][:6].decode()
                codes[code] = codes.get(code, 0) + 1

            for environ in environs[:50]:  # warm-up: imports, first connection, caches
                call(environ)
            profiler = None if args.no_profile else Profiler(interval=args.interval)
            began, cpu0 = time.perf_counter(), time.process_time()
            if profiler:
                profiler.start()
            for environ in environs[50:]:
                call(environ)
            if profiler:
                profiler.stop()
            elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu0
            db.close_all()
            print(
                f"{args.db} {args.scenario} [{args.patch or 'as is'}]: {args.requests} requests in "
                f"{elapsed:.2f} s, {elapsed / args.requests * 1000:.2f} ms each "
                f"({cpu / args.requests * 1000:.2f} ms CPU), one process; answers {codes}"
            )
            if profiler:
                out = io.StringIO()
                out.write(profiler.output_text(unicode=True, color=False, show_all=args.show_all))
                print(out.getvalue())
                if args.flat:
                    from pyinstrument.renderers import ConsoleRenderer

                    flat = ConsoleRenderer(unicode=True, flat=True, flat_time="self")
                    lines = profiler.output(flat).splitlines()
                    print("\n".join(lines[: 12 + args.flat]))
                if args.html:
                    args.html.write_text(profiler.output_html())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
