"""One settings file for every process: `isvserver serve` (gunicorn, its workers, the job consumer), the
commands run from another shell, and gunicorn started by hand, with nothing but ISV_SETTINGS_FILE set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from isvserver import licenses
from isvserver.marketplaces.koogallery_kit.client_secret import generate_key_pair

from support.harness import ACCESS_KEY, base_env
from support.server import (
    db_count,
    free_port,
    post_signed,
    run_cli,
    running_server,
    stop_group,
    subprocess_env,
    wait_until,
)

pytestmark = pytest.mark.e2e

GUNICORN_CONFIG = Path(__file__).resolve().parents[2] / "config" / "gunicorn.conf.py"
KIT_KEY = "kit-key-from-the-settings-file"


def settings_file(tmp_path: Path, **extra: str) -> tuple[Path, str]:
    """A production settings file enabling both adapters; its path and database URL."""
    url = f"sqlite:///{tmp_path / 'isvserver.sqlite3'}"
    pem = generate_key_pair()[0].decode("ascii")
    values = base_env(
        tmp_path, url, ISV_MARKETPLACES="koogallery,koogallery_kit", ISV_KIT_KEYS=KIT_KEY,
        ISV_LICENSE_SIGNING_KEY=licenses.keygen()[0], **extra,
    )  # fmt: skip
    lines = [f"{name}={value}" for name, value in values.items()]
    lines.append('ISV_KIT_PRIVATE_KEY="' + pem.replace("\n", "\\n") + '"')
    path = tmp_path / "isvserver.env"
    path.write_text("# written by the test\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path, url


def test_serve_and_every_command_read_the_settings_file(tmp_path: Path) -> None:
    """Before: `kit`, `tenants`, the Kit part of `simulate flow` and the Kit tables in `reseal` existed
    only when ISV_MARKETPLACES was exported in the shell at hand."""
    path, url = settings_file(tmp_path)
    env = subprocess_env({"ISV_SETTINGS_FILE": str(path)})

    with running_server(env, tmp_path / "server.log", workers=1) as server:
        reply, _ = post_signed(
            server, {"activity": "newInstance", "orderId": "CS1", "orderLineId": "CS1-1", "businessId": "b"}
        )
        assert reply.json["resultCode"] == "000000" and reply.signed_by(ACCESS_KEY), reply.raw
        flow = run_cli("simulate", "flow", server.url, env=env)
        assert flow.returncode == 0, flow.describe()
        assert "kit flow: all answers right" in flow.output, flow.describe()
        assert "skipped" not in flow.output, flow.describe()
    assert db_count(url, "kit_application") == 1, "applicationSync stored nothing"

    tenants = run_cli("tenants", "list", env=env)
    assert tenants.returncode == 0, tenants.describe()
    assert "sim-tenant" in tenants.stdout, tenants.describe()
    resealed = run_cli("reseal", env=env)
    assert resealed.returncode == 0, resealed.describe()
    assert "kit_application.client_secret_sealed: 0 resealed, 1 already current" in resealed.output
    assert resealed.output.rstrip().endswith("(1 configured)")


def test_gunicorn_started_by_hand_reads_the_settings_file(tmp_path: Path) -> None:
    """`gunicorn -c config/gunicorn.conf.py 'isvserver:create_app()'`: the configuration takes its bind
    and workers from the file, the app its keys."""
    port = free_port()
    path, _ = settings_file(tmp_path, ISV_BIND=f"127.0.0.1:{port}", ISV_WORKERS="1")
    env = subprocess_env({"ISV_SETTINGS_FILE": str(path)})
    assert run_cli("migrate", env=env).returncode == 0
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONFIG), "isvserver:create_app()"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        assert wait_until(lambda: "Worker ready" in log.read_text(encoding="utf-8"), 60), log.read_text()
        flow = run_cli("simulate", "newInstance", f"http://127.0.0.1:{port}/saasproduce", env=env)
        assert flow.returncode == 0, flow.describe() + log.read_text()
        kit = run_cli("simulate", "kit", "tenantSync", f"http://127.0.0.1:{port}/saasproduce", env=env)
        assert kit.returncode == 0, kit.describe()
    finally:
        stop_group(process)
