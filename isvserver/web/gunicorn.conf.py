"""gunicorn settings for isvserver (used by `isvserver serve`; command-line flags override them).

Installed with the package, beside this module's package; gunicorn reads it as a file (`-c PATH`), so
its master never imports isvserver (prometheus_client must see PROMETHEUS_MULTIPROC_DIR, set below,
before anything imports it). To change a setting, pass `isvserver serve --config FILE` a file that
runs this one and then sets what you want: config/gunicorn.conf.py in the source tree is such a file.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from importlib.util import find_spec, module_from_spec, spec_from_file_location
from pathlib import Path


def _read_settings_file():
    """Add the settings file's values to the environment (ISV_SETTINGS_FILE, else ./isvserver.env), as
    every `isvserver` command does: loaded by path, so the master still imports nothing of isvserver."""
    package = find_spec("isvserver")
    if package is None or package.origin is None:
        return
    spec = spec_from_file_location(
        "_isvserver_settings_file", Path(package.origin).parent / "settings_file.py"
    )
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module.apply()
    except module.SettingsFileError as exc:
        sys.exit(f"Error: {exc}")


_read_settings_file()

# Where to listen. TLS terminates in front (nginx or a cloud load balancer): keep this on loopback
# or a private address.
bind = os.environ.get("ISV_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("ISV_WORKERS", "3"))
# Threads whose event loop waits for each request to arrive whole (isvserver/web/worker.py): clients
# that connect and send nothing, or trickle a request, hold no thread (the sync worker is held by
# each one until the timeout kills it). A request not whole within 10 s is dropped (408 once its head
# has arrived); its body is framed there (h11) and cut off at ISV_MAX_BODY_BYTES.
worker_class = "isvserver.web.worker.BufferedThreadWorker"
threads = 4  # at most the SQLite pool's 8 connections per process (isvserver/db.py)
# Connection slots per worker. When all are taken, the oldest connection still waiting for its request
# gives its slot up; each source address may have ISV_PENDING_PER_SOURCE waiting per worker, and a
# connection must send its first byte within ISV_FIRST_BYTE_TIMEOUT_S (isvserver/web/worker.py).
worker_connections = int(os.environ.get("ISV_WORKER_CONNECTIONS", "4096"))

# The marketplace waits 5 s; a worker whose event loop is stuck far longer than that is replaced.
timeout = 30
graceful_timeout = 30
# One call per connection (as the marketplace and nginx's default upstream make them).
keepalive = 0

# Error and access lines are redacted (no query string, no signature, nonce or key) whatever path
# logs them: a worker aborted in a request, an unparsable request line, an error escaping the app.
logger_class = "isvserver.web.gunicorn_logging.RedactingLogger"

# Never load the app in the master: each worker opens its own database connections after the fork.
preload_app = False

# Request limits (the body limit itself is ISV_MAX_BODY_BYTES, enforced by the app with a 413).
limit_request_line = 8190
limit_request_fields = 100

# Which proxies may set X-Forwarded-* (the nginx in front, on the same host by default).
forwarded_allow_ips = os.environ.get("ISV_FORWARDED_ALLOW_IPS", "127.0.0.1")

# Logs to stderr. The access log format leaves out the query string (%(U)s is the path alone):
# the query carries signature, timestamp and nonce, which must never reach a log line.
# ISV_ACCESS_LOG=0 turns the access log off (nginx in front keeps its own); the app's call lines stay.
accesslog = None if os.environ.get("ISV_ACCESS_LOG", "").strip().lower() in ("0", "false", "no") else "-"
errorlog = "-"
loglevel = os.environ.get("ISV_LOG_LEVEL", "info").lower()
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)sB %(M)sms request_id=%({x-request-id}o)s'

# gunicorn >= 25 opens a control socket at one fixed path per user; two servers on one host would
# fight over it. isvserver does not use it.
control_socket_disable = True

# Prometheus metrics from every worker are merged through files in this folder (prometheus_client's
# multiprocess mode). It is set here, before any worker imports the app, and emptied at start.
os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR",
    str(Path(os.environ.get("ISV_INSTANCE_DIR") or "instance").resolve() / "metrics"),
)


def on_starting(server):
    """Start private (umask 077: what the master and workers create is 0600/0700, as isvserver/files.py
    makes it) and with no metrics left over from an earlier run."""
    os.umask(0o077)
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    metrics_dir.chmod(0o700)


def child_exit(server, worker):
    """Drop a dead worker's live gauges (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


# The job consumer (`isvserver worker`) runs beside the workers when `isvserver serve` asks for it
# (ISV_START_CONSUMER=1): started once the master is ready, restarted if it dies, stopped at exit.
CONSUMER_RESTART_PAUSE_S = 5.0
CONSUMER_STOP_TIMEOUT_S = 20.0
_consumer = {}


def _start_consumer(server):
    process = subprocess.Popen([sys.executable, "-m", "isvserver", "worker", "--supervised"])
    _consumer.update(process=process, started=time.monotonic())
    server.log.info("Job consumer started (pid: %s)", process.pid)


def when_ready(server):
    """Start the job consumer and have the master's loop keep it running."""
    if os.environ.get("ISV_START_CONSUMER") != "1":
        return
    _start_consumer(server)
    manage_workers = server.manage_workers

    def manage_workers_and_consumer():
        manage_workers()
        process = _consumer["process"]
        # gunicorn's own reaping may collect the consumer first; poll() then reports 0.
        if process.poll() is not None and time.monotonic() - _consumer["started"] > CONSUMER_RESTART_PAUSE_S:
            server.log.error(
                "Job consumer (pid: %s) exited with %s; restarting it", process.pid, process.returncode
            )
            _start_consumer(server)

    server.manage_workers = manage_workers_and_consumer


def on_exit(server):
    """Stop the job consumer gracefully (it finishes its running jobs), then for good."""
    process = _consumer.get("process")
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(CONSUMER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    server.log.info("Job consumer (pid: %s) stopped", process.pid)


def post_worker_init(worker):
    """Say when a worker has loaded the app and takes calls (start-up checks wait for every worker)."""
    worker.log.info("Worker ready (pid: %s)", worker.pid)
