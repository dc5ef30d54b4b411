"""isvserver installed as a package, outside the checkout, the way a seller deploys it.

One test builds the sdist and the wheel from a clean copy of the source (what `git clone` gives),
checks what they carry, installs the wheel into a fresh virtual environment and runs `isvserver
serve` and `isvserver simulate flow` from another folder. The other runs the README's "Deploying"
section as written (its shell block, then the systemd unit's ExecStart with its EnvironmentFile and
WorkingDirectory; only systemd itself is left out), with /opt, /etc and /var/lib moved under a
temporary folder and the unit's --bind and --workers replaced by a free port and 2 workers.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from support.harness import ACCESS_KEY, base_env
from support.server import running_server, subprocess_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 600
PIP_QUIET = ("--quiet", "--disable-pip-version-check")


def clean_copy(dest: Path) -> Path:
    """The checkout's tracked and new (not ignored) files, copied to `dest`: what a clone holds."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode & 0o777)
    return dest


def run(cmd: list[str] | str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run to completion; fail with its output unless it exits 0."""
    result = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        shell=isinstance(cmd, str),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        executable="/bin/bash" if isinstance(cmd, str) else None,
    )
    assert result.returncode == 0, f"$ {cmd}\nexit {result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout + result.stderr


def fresh_venv(path: Path) -> Path:
    """A new virtual environment with nothing but pip; its bin folder."""
    run([sys.executable, "-m", "venv", str(path)], cwd=path.parent)
    return path / "bin"


def serve_and_flow(isvserver: str, workdir: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """`isvserver serve` from `workdir` answers /healthz, and the same installation's `simulate flow`
    against it exits 0 with every answer right."""
    with running_server(env, tmp_path / "server.log", cwd=workdir, workers=2, executable=isvserver) as server:
        output = run([isvserver, "simulate", "flow", server.url, "--key", ACCESS_KEY], cwd=workdir, env=env)
    assert "flow: all answers right" in output, output


def test_the_wheel_carries_what_serve_needs(tmp_path: Path) -> None:
    """sdist and wheel built from a clean copy: both hold LICENSE, the wheel the gunicorn
    configuration and the migrations; installed into a fresh venv, `isvserver serve` (run from
    another folder) answers and `isvserver simulate flow` gets every answer right."""
    source = clean_copy(tmp_path / "source")
    dist = tmp_path / "dist"
    built = run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)], cwd=tmp_path)
    assert "would be ignored" not in built and "BuildBackendWarning" not in built, built
    (wheel,) = dist.glob("isvserver-*.whl")
    (sdist,) = dist.glob("isvserver-*.tar.gz")
    names = zipfile.ZipFile(wheel).namelist()
    for wanted in ("isvserver/web/gunicorn.conf.py", "isvserver/web/worker.py", "isvserver/cli/__init__.py"):
        assert wanted in names, f"{wanted} not in {wheel.name}"
    assert any(n.startswith("isvserver/migrations/") and n.endswith(".sql") for n in names), names
    assert "isvserver/marketplaces/koogallery_kit/migrations/0001_sync.sql" in names, names
    assert any(re.fullmatch(r"isvserver-[^/]+\.dist-info/(licenses/)?LICENSE", n) for n in names), names
    with tarfile.open(sdist) as archive:
        assert any(n.endswith("/LICENSE") and n.count("/") == 1 for n in archive.getnames())

    bin_dir = fresh_venv(tmp_path / "venv")
    run([str(bin_dir / "pip"), "install", *PIP_QUIET, str(wheel)], cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    url = f"sqlite:///{tmp_path / 'isvserver.sqlite3'}"
    env = subprocess_env(base_env(tmp_path, url))
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    serve_and_flow(str(bin_dir / "isvserver"), elsewhere, tmp_path, env)


def test_the_first_run_prints_no_packaging_warnings(tmp_path: Path) -> None:
    """scripts/venv.sh (what the first `./scripts/run` and `./scripts/test` do) on a fresh clone: no
    "Package would be ignored" about the migrations folders, no setuptools notice (dependencies left
    out with PIP_NO_DEPS: they do not change what the project's build prints)."""
    source = clean_copy(tmp_path / "source")
    env = subprocess_env({"PIP_NO_DEPS": "1"})
    output = run("source scripts/venv.sh", cwd=source, env=env)
    lines = [
        line
        for line in output.splitlines()
        if line.strip() and "is ignored: it is neither a file nor a directory" not in line  # this host's pip
    ]
    assert lines == ["installing isvserver and its dependencies into .venv ..."], output
    assert list((source / ".venv").glob("lib/python3.*/site-packages/__editable__*isvserver*")), output


def deploying_section() -> str:
    """The README's "Deploying" section, up to the next section of its level."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Deploying\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def fenced(section: str, language: str) -> list[str]:
    """The code blocks of `language` in `section`."""
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def test_the_readme_deployment_steps_work_as_written(tmp_path: Path) -> None:
    """The README's install block run as written (paths moved under tmp), the settings file it
    installs filled in, the systemd unit's ExecStart run with its EnvironmentFile from its
    WorkingDirectory: the server answers and `simulate flow` gets every answer right."""
    section = deploying_section()
    (install,) = fenced(section, "sh")
    (unit,) = fenced(section, "ini")
    moved = {"/opt/isvserver": tmp_path / "opt", "/etc/isvserver": tmp_path / "etc"}
    moved["/var/lib/isvserver"] = tmp_path / "var"

    def relocate(text: str) -> str:
        for original, replacement in moved.items():
            text = text.replace(original, str(replacement))
        return text

    source = clean_copy(tmp_path / "source")
    run("set -euo pipefail\n" + relocate(install), cwd=source, env=subprocess_env())

    settings = moved["/etc/isvserver"] / "isvserver.env"
    assert oct(settings.stat().st_mode & 0o777) == "0o600", "the settings file is not 0600"
    state = moved["/var/lib/isvserver"]
    state.mkdir(mode=0o700)  # what StateDirectory= does
    values = base_env(tmp_path, f"sqlite:///{state / 'isvserver.sqlite3'}", ISV_INSTANCE_DIR=str(state))
    settings.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")

    fields = dict(re.findall(r"^(\w+)=(.*)$", unit, flags=re.MULTILINE))
    assert fields["User"] == "isvserver" and fields["StateDirectory"] == "isvserver", fields
    assert relocate(fields["EnvironmentFile"]) == str(settings), fields
    workdir = Path(relocate(fields["WorkingDirectory"]))
    exec_start = shlex.split(relocate(fields["ExecStart"]))
    isvserver, args = exec_start[0], exec_start[1:]
    assert args[:1] == ["serve"], exec_start
    env_file = dict(
        line.split("=", 1) for line in settings.read_text().splitlines() if line and not line.startswith("#")
    )
    env = subprocess_env(env_file)
    # running_server binds its own free port and worker count in place of the unit's --bind/--workers.
    assert "--bind" in args and "--workers" in args, exec_start
    serve_and_flow(isvserver, workdir, tmp_path, env)
    assert oct(state.stat().st_mode & 0o777) == "0o700"
