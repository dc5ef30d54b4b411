"""`isvserver migrate`, `serve`, `worker` and `webhook-secret`: running the server and its job consumer."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import click

from isvserver.adapters import load
from isvserver.cli import helpers
from isvserver.cli.helpers import settings_or_exit
from isvserver.jobs import queue
from isvserver.settings import redacted_url

GUNICORN_CONFIG = Path(__file__).resolve().parent.parent / "web" / "gunicorn.conf.py"  # installed with it
APP_TARGET = "isvserver:create_app()"


@click.command()
def migrate() -> None:
    """Apply pending schema migrations (run before the workers start)."""
    helpers.run_migrations(helpers.announced_settings())


@click.command()
@click.option(
    "--bind",
    envvar="ISV_BIND",
    show_envvar=True,
    default="127.0.0.1:8000",
    show_default=True,
    help="HOST:PORT.",
)
@click.option(
    "--workers",
    envvar="ISV_WORKERS",
    show_envvar=True,
    default=3,
    show_default=True,
    type=click.IntRange(1, 64),
    help="gunicorn workers.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    show_default="isvserver/web/gunicorn.conf.py, installed with it",
    help="gunicorn configuration file.",
)
@click.option(
    "--migrate/--no-migrate",
    "run_migrations",
    default=True,
    show_default=True,
    help="Migrate before starting.",
)
@click.option(
    "--jobs/--no-jobs",
    "run_jobs",
    envvar="ISV_SERVE_JOBS",
    show_envvar=True,
    default=True,
    show_default=True,
    help="Also run the job consumer (use --no-jobs when `isvserver worker` runs elsewhere).",
)
def serve(bind: str, workers: int, config_path: str | None, run_migrations: bool, run_jobs: bool) -> None:
    """Migrate, then run the produce endpoint under gunicorn, with the job consumer beside it."""
    settings = helpers.announced_settings()
    if run_migrations:
        helpers.run_migrations(settings)
    where = (
        ", ".join(
            f"http://{bind}{mount.prefix(settings)}"
            for name in settings.marketplaces
            for mount in load(name).mounts
        )
        or f"http://{bind}"
    )
    click.echo(
        f"isvserver ({settings.env}) on {where} with {workers} workers, "
        f"database {redacted_url(settings.database_url)}, jobs "
        + (
            f"consumed here from {queue.describe(settings)}" if run_jobs else "consumed by `isvserver worker`"
        ),
        err=True,
    )
    os.environ["ISV_START_CONSUMER"] = "1" if run_jobs else "0"
    config = config_path or str(GUNICORN_CONFIG)
    argv = [sys.executable, "-m", "gunicorn", "-c", config, "--bind", bind, "--workers", str(workers)]
    os.execv(sys.executable, [*argv, APP_TARGET])  # noqa: S606 (replaces this process with gunicorn)


@click.command()
@click.option(
    "--threads",
    envvar="ISV_JOB_WORKERS",
    show_envvar=True,
    type=click.IntRange(1, 64),
    show_default="4",
    help="Jobs run at once.",
)
@click.option("--supervised", is_flag=True, hidden=True, help="Started by `isvserver serve`: stop with it.")
def worker(threads: int | None, supervised: bool) -> None:
    """Run the job consumer alone (provisioning, change delivery, order fetches, sweeps, reconcile)."""
    from isvserver import create_app

    settings = settings_or_exit()
    jobs = create_app(settings).extensions["isvserver"].jobs
    for started in jobs.starts:
        started()
    jobs.sweep()  # what a killed consumer left behind
    threads = threads or settings.job_workers
    consumer = jobs.huey.create_consumer(
        workers=threads,
        worker_type="thread",
        periodic=True,
        initial_delay=0.05,
        backoff=1.3,
        max_delay=0.5,
        check_worker_health=True,
    )
    if supervised:
        _stop_with_parent()
    logging.getLogger("isvserver.jobs").info(
        "job consumer pid=%d threads=%d queue=%s",
        os.getpid(),
        threads,
        queue.describe(settings),
    )
    jobs.start_periodic()  # Jobs.every's jobs, each under its database lease
    try:
        consumer.run()
    finally:
        jobs.stop_periodic()


def _stop_with_parent() -> None:
    """Stop gracefully (SIGINT) when the process that started this one is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@click.command("data-key")
def data_key() -> None:
    """Print a new ISV_DATA_KEY key (32 random bytes, url-safe base64, 44 characters)."""
    from isvserver.settings import new_data_key

    click.echo(new_data_key())


@click.command("webhook-secret")
def webhook_secret() -> None:
    """Print a new ISV_WEBHOOK_SECRET (whsec_…) for the webhook provisioner."""
    from isvserver.provisioning.loader import generate_webhook_secret

    click.echo(generate_webhook_secret())
