"""A throwaway PostgreSQL server for tests: initdb + pg_ctl on 127.0.0.1 at a free port."""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import re
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import psycopg
from psycopg import sql

PG_USER = "postgres"  # the unprivileged OS user that runs initdb/postgres when we are root
_TOOLS = ("initdb", "pg_ctl", "postgres")
_PORT_RANGE = (15000, 32000)  # below Linux's ephemeral range, so client sockets never take our port


def find_pg_bin() -> Path | None:
    """Return the newest /usr/lib/postgresql/*/bin (or PATH dir) having initdb, pg_ctl and postgres."""

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    if found := shutil.which("pg_ctl"):
        candidates.append(Path(found).resolve().parent)
    return next((d for d in candidates if all((d / t).is_file() for t in _TOOLS)), None)


def _is_root() -> bool:
    """Tell whether this process runs as root."""
    return os.geteuid() == 0


def unavailable_reason() -> str | None:
    """Say why a PostgreSQL server cannot be started here, or None if it can."""
    if find_pg_bin() is None:
        return "PostgreSQL binaries (initdb, pg_ctl, postgres) not found in /usr/lib/postgresql/*/bin or PATH"
    if _is_root():
        if shutil.which("runuser") is None:
            return "running as root (PostgreSQL refuses that) and `runuser` is missing to switch user"
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return (
                f"running as root (PostgreSQL refuses that) and there is no '{PG_USER}' user to run it as; "
                "install Debian's postgresql package (scripts/ci-setup) or run the tests as a normal user"
            )
    return None


def require_postgres() -> None:
    """Skip the calling test when no server can be started, or fail if ISV_TEST_REQUIRE_POSTGRES=1."""
    import pytest

    if (reason := unavailable_reason()) is not None:
        if os.environ.get("ISV_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"ISV_TEST_REQUIRE_POSTGRES=1 but PostgreSQL is unavailable: {reason}")
        pytest.skip(f"PostgreSQL unavailable: {reason}")


def _reachable_by(path: Path, uid: int) -> bool:
    """Tell whether every directory from / down to path can be traversed by uid (other or owner x bit)."""
    for d in [path, *path.parents]:
        st = d.stat()
        if not (st.st_mode & stat.S_IXOTH or (st.st_uid == uid and st.st_mode & stat.S_IXUSR)):
            return False
    return True


class PostgresServer:
    """A throwaway cluster in base_dir, listening only on 127.0.0.1:port; a context manager."""

    def __init__(self, base_dir: Path) -> None:
        """Remember where to put the cluster; nothing starts before __enter__."""
        self.base_dir = Path(base_dir)
        self.bin: Path | None = find_pg_bin()
        self.port: int = 0
        self.dir: Path = self.base_dir / "pg"  # may move to a short /tmp dir, see _prepare_dir

    # -- paths and commands ---------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.dir / "data"

    @property
    def log_file(self) -> Path:
        """The server log."""
        return self.dir / "postgres.log"

    @property
    def url(self) -> str:
        """The URL of the postgres database as superuser postgres."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        """The URL of a database on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool, as PG_USER when we are root."""
        assert self.bin is not None
        cmd = [str(self.bin / tool), *args]
        if _is_root():
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        return subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True, check=check, timeout=120)

    # -- lifecycle ------------------------------------------------------------------------------------

    def _prepare_dir(self) -> None:
        """Create the working dir, owned by PG_USER when root, in a short path PG_USER can reach."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        uid = pwd.getpwnam(PG_USER).pw_uid if _is_root() else os.geteuid()
        # A unix socket path must fit in 107 bytes; pytest's tmp dirs (0700 root) are not reachable as well.
        if len(str(self.dir / "run" / ".s.PGSQL.65535")) > 100 or not _reachable_by(self.base_dir, uid):
            self.dir = Path(tempfile.mkdtemp(prefix="isvpg-"))
        self.dir.mkdir(exist_ok=True)
        (self.dir / "run").mkdir(exist_ok=True)
        if _is_root():
            for p in (self.dir, self.dir / "run"):
                os.chown(p, uid, -1)

    def _initdb(self) -> None:
        """Create the cluster and write its settings."""
        res = self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync", check=False,
        )  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed ({res.returncode}): {res.stdout}{res.stderr}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.dir / "run"),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
            "logging_collector": "off",
        }
        conf = "".join(f"{k} = '{v.replace(chr(39), chr(39) * 2)}'\n" for k, v in settings.items())
        with (self.data_dir / "postgresql.conf").open("a") as f:  # owned by PG_USER; root may append
            f.write("\n# isvserver tests\n" + conf)

    def start(self) -> None:
        """Start the server on self.port (or, the first time, on a free port); wait until it accepts."""
        if self.is_running():
            return
        attempts = 1 if self.port else 5
        for _ in range(attempts):
            port = self.port or _free_port()
            log_start = self._log_size()
            res = self._run(
                "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir),
                "-l", str(self.log_file), "-o", f"-p {port}", check=False,
            )  # fmt: skip
            if res.returncode == 0:
                self.port = port
                return
            log = self.log_file.read_bytes()[log_start:].decode(errors="replace") if self._log_size() else ""
            if "could not bind" not in log and "already in use" not in log:
                break
        tail = "\n".join(log.splitlines()[-30:]) or "(empty)"
        raise RuntimeError(
            f"PostgreSQL did not start on port {port}: {res.stdout}{res.stderr}\n--- log:\n{tail}"
        )

    def _log_size(self) -> int:
        """The server log's size in bytes (0 if it does not exist yet)."""
        return self.log_file.stat().st_size if self.log_file.exists() else 0

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (mode: smart, fast or immediate) and wait until it is gone; the port is kept."""
        if self.is_running():
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data_dir))

    def is_running(self) -> bool:
        """Tell whether the postmaster of this cluster is running."""
        if self.bin is None or not (self.data_dir / "postmaster.pid").exists():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def __enter__(self) -> PostgresServer:
        """Create the cluster and start it; clean everything up if that fails."""
        if (reason := unavailable_reason()) is not None:
            raise RuntimeError(f"cannot start PostgreSQL: {reason}")
        try:
            self._prepare_dir()
            self._initdb()
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the server at once and remove its directory."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- databases ------------------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create a database and return its URL."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database if it exists, disconnecting its sessions."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _free_port() -> int:
    """Pick a TCP port that is free on 127.0.0.1 right now."""
    for _ in range(100):
        port = random.randrange(*_PORT_RANGE)
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    raise RuntimeError("no free TCP port found on 127.0.0.1")
