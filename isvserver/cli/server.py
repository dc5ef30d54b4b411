"""`isvserver migrate`, `serve`, `worker` and `webhook-secret`: running the server and its job consumer."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import click
from click.core import ParameterSource

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
@click.pass_context
def serve(
    ctx: click.Context, bind: str, workers: int, config_path: str | None, run_migrations: bool, run_jobs: bool
) -> None:
    """Migrate, then run the produce endpoint under gunicorn, with the job consumer beside it.

    --bind and --workers given on the command line win over the configuration file; otherwise its
    `bind` and `workers` apply (the installed one reads ISV_BIND and ISV_WORKERS).
    """
    settings = helpers.announced_settings()
    from_config = config_path is not None
    given = {
        name: ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE or not from_config
        for name in ("bind", "workers")
    }
    if given["bind"]:
        check_free(bind)
    if run_migrations:
        helpers.run_migrations(settings)
    host = bind if given["bind"] else f"the bind of {config_path}"
    mounts = (mount for name in settings.marketplaces for mount in load(name).mounts)
    urls = (f"http://{host}{mount.prefix(settings)}" for mount in mounts)
    where = ", ".join(dict.fromkeys(urls)) or f"http://{host}"  # two mounts may share a prefix (V1 and V2)
    count = f"{workers} workers" if given["workers"] else f"the workers of {config_path}"
    click.echo(
        f"isvserver ({settings.env}) on {where} with {count}, "
        f"database {redacted_url(settings.database_url)}, jobs "
        + (
            f"consumed here from {queue.describe(settings)}" if run_jobs else "consumed by `isvserver worker`"
        ),
        err=True,
    )
    os.environ["ISV_START_CONSUMER"] = "1" if run_jobs else "0"
    argv = [sys.executable, "-m", "gunicorn", "-c", config_path or str(GUNICORN_CONFIG)]
    if given["bind"]:
        argv += ["--bind", bind]
    if given["workers"]:
        argv += ["--workers", str(workers)]
    os.execv(sys.executable, [*argv, APP_TARGET])  # noqa: S606 (replaces this process with gunicorn)


def check_free(bind: str) -> None:
    """Exit in one line when something already listens on HOST:PORT (before any banner or migration)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or bind.startswith(("unix:", "fd://")):
        return  # a socket path or file descriptor: gunicorn checks it
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 (gunicorn's meaning of ":PORT")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        raise click.ClickException(f"cannot listen on {bind}: no such host") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"{bind} is already in use (another isvserver?): stop it, or choose another "
                    "address with --bind or ISV_BIND"
                ) from None
            raise click.ClickException(f"cannot listen on {bind}: {exc.strerror}") from None


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
