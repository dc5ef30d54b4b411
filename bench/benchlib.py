"""What bench/run.py and bench/profile.py share: keys, request signing, databases and seeding.

Requests are signed here with a small independent implementation of the V2 basic interface's
signature (spec §2.1), not with isvserver's own signer; the server's 000000 answers prove it agrees.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import os
import random
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PRODUCE_PATH = "/saasproduce"
FRONTEND_TEMPLATE = "https://tenant.example.com/t/{instance_id}"
ADMIN_TEMPLATE = "https://tenant.example.com/t/{instance_id}/admin"
ID_SALT = b"/isvserver-bench"


# --- the code measured -------------------------------------------------------------------------

CODE_PATHS = ("isvserver", "config", "wsgi.py")  # what the servers run, snapshotted at start


def snapshot_code(work: Path, source: str) -> tuple[Path, str]:
    """Copy what the servers run (isvserver/, config/, wsgi.py) into the work dir; say what it is.

    The working tree is shared with people editing it: every server and the in-process check import
    this copy (PYTHONPATH first, before the editable install), so one run measures one version of
    the code even when files change meanwhile. `source` is "worktree" (as it is now, uncommitted
    edits included), a commit ("HEAD", a hash, a tag: via `git archive`), or a directory holding
    isvserver/, config/ and wsgi.py (an intermediate version built for a before/after comparison).
    """
    code = work / "code"
    code.mkdir()
    if source != "worktree" and (Path(source) / "isvserver").is_dir():
        for name in CODE_PATHS:
            path = Path(source) / name
            if path.is_dir():
                shutil.copytree(path, code / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, code / name)
        described = f"directory {source}"
        digest = hashlib.sha256()
        for file in sorted(p for p in code.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(code)).encode() + b"\0" + file.read_bytes())
        return code, f"{described}; snapshot sha256 {digest.hexdigest()[:12]}"

    def git(*argv: str) -> str:
        out = subprocess.run(["git", *argv], capture_output=True, text=True, cwd=ROOT, timeout=60)
        return out.stdout.rstrip("\n")

    head = git("rev-parse", "--short", "HEAD" if source == "worktree" else f"{source}^{{commit}}").strip()
    head = head or "unknown"
    if source != "worktree":
        archive = subprocess.run(
            ["git", "archive", "--format=tar", head, *CODE_PATHS], capture_output=True, cwd=ROOT, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
        described = f"commit {head}"
    else:
        for name in CODE_PATHS:
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(path, code / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, code / name)
        dirty = git("status", "--porcelain", "--", *CODE_PATHS).splitlines()
        described = f"working tree at commit {head}" + (
            f" + {len(dirty)} uncommitted changes ({', '.join(line[3:] for line in dirty[:8])})"
            if dirty
            else ""
        )
    digest = hashlib.sha256()
    for file in sorted(p for p in code.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(code)).encode() + b"\0" + file.read_bytes())
    return code, f"{described}; snapshot sha256 {digest.hexdigest()[:12]}"


# --- keys and settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """Fresh keys for one benchmark run (never the development keys)."""

    access: str
    notify: str
    data: str

    @classmethod
    def fresh(cls) -> Keys:
        return cls(
            access=secrets.token_urlsafe(24),
            notify=secrets.token_urlsafe(24),
            data=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii"),
        )


def server_env(keys: Keys, database_url: str, instance_dir: Path, tolerance_s: int) -> dict[str, str]:
    """The production environment isvserver runs with in the benchmark (no inherited ISV_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISV_")}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "ISV_ENV": "production",
            "ISV_ACCESS_KEYS": keys.access,
            "ISV_NOTIFY_KEYS": keys.notify,
            "ISV_DATA_KEY": keys.data,
            "ISV_DATABASE_URL": database_url,
            "ISV_INSTANCE_DIR": str(instance_dir),
            "ISV_FRONTEND_URL_TEMPLATE": FRONTEND_TEMPLATE,
            "ISV_ADMIN_URL_TEMPLATE": ADMIN_TEMPLATE,
            # Pre-signed timestamps must stay inside the window from signing to the end of a run.
            "ISV_SIGNATURE_TOLERANCE": str(tolerance_s),
            "ISV_LOG_LEVEL": "INFO",
        }
    )
    return env


# --- signing ------------------------------------------------------------------------------------


def _hmac_hex(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def signed_target(key: str, body: bytes, timestamp_ms: int, nonce: str) -> str:
    """`/saasproduce?signature=…&timestamp=…&nonce=…` for this exact body (spec §2.1)."""
    k = key.encode("utf-8")
    inner = _hmac_hex(k, body)
    signature = _hmac_hex(k, (key + nonce + str(timestamp_ms) + inner).encode("utf-8")).upper()
    return f"{PRODUCE_PATH}?signature={signature}&timestamp={timestamp_ms}&nonce={nonce}"


def encode(body: dict[str, Any]) -> bytes:
    """The body as the marketplace sends it: compact, keys sorted, raw UTF-8."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def instance_id(i: int) -> str:
    """The id of the i-th seeded instance: UUID-shaped, like the businessIds the marketplace sends."""
    h = hashlib.sha1(b"%d" % i + ID_SALT).hexdigest()  # noqa: S324 (an id, not security)
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def order_of(i: int) -> tuple[str, str]:
    """Order id and order line id of the i-th seeded instance."""
    order = f"CS{2511000000000 + i:016d}"
    return order, f"{order}-000001"


class RequestMaker:
    """Makes unique signed requests: every call gets a fresh nonce and the current timestamp."""

    def __init__(self, key: str, population: int, seed: int | None = None) -> None:
        self.key = key
        self.population = population
        self.random = random.Random(seed)
        self.serial = 0
        self.run_tag = secrets.token_hex(4)

    def _nonce(self) -> str:
        self.serial += 1
        return f"{self.run_tag}{self.serial:012d}{secrets.token_hex(8)}"

    def body(self, scenario: str) -> dict[str, Any]:
        if scenario in ("query1", "bare"):
            return {
                "activity": "queryInstance",
                "instanceId": instance_id(self.random.randrange(self.population)),
            }
        if scenario == "query100":
            picks = self.random.sample(range(self.population), min(100, self.population))
            return {"activity": "queryInstance", "instanceId": ",".join(instance_id(i) for i in picks)}
        if scenario == "new":
            order = f"CB{self.run_tag}{self.serial:012d}"
            return {
                "activity": "newInstance",
                "orderId": order,
                "orderLineId": f"{order}-000001",
                "businessId": str(uuid.uuid4()),
                "customerId": "68cbc86abc2018ab880d92f36422fa0e",
                "customerName": "bench-buyer",
                "productId": "00301-666666-0--0",
                "testFlag": "0",
                "expireTime": (datetime.now(UTC) + timedelta(days=365)).strftime("%Y%m%d%H%M%S"),
                "chargingMode": "1",
                "periodType": "year",
                "periodNumber": "1",
            }
        raise ValueError(f"unknown scenario {scenario}")

    def line(self, scenario: str) -> str:
        """One pre-signed request: `target TAB body` (bodies are compact JSON: no tab, no newline)."""
        nonce = self._nonce()
        payload = encode(self.body(scenario))
        target = signed_target(self.key, payload, int(time.time() * 1000), nonce)
        return f"{target}\t{payload.decode('utf-8')}\n"

    def write(self, path: Path, scenario: str, count: int) -> float:
        """Write `count` unique requests to `path`; return the oldest timestamp (UNIX seconds)."""
        oldest = time.time()
        with path.open("w", encoding="utf-8") as f:
            for _ in range(count):
                f.write(self.line(scenario))
        return oldest


# --- databases ----------------------------------------------------------------------------------


def load_postgres_support() -> ModuleType:
    """tests/support/postgres.py (PostgresServer), imported by path without touching the tests."""
    name = "isvbench_pg_support"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "support" / "postgres.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


PG_DURABLE = {  # PostgreSQL's own defaults: PostgresServer's test settings turn durability off
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "128MB",
}


def make_pg_durable(server: Any) -> dict[str, str]:
    """Put the test cluster back on PostgreSQL's durable defaults (restart); return what is in force."""
    import psycopg

    with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as conn:
        for name, value in PG_DURABLE.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    server.stop("fast")
    server.start()
    with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as conn:
        return {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in PG_DURABLE}


def migrate(database_url: str) -> None:
    """Apply isvserver's migrations to a fresh database (in-process, as `isvserver migrate` does)."""
    from isvserver.db import make_database
    from isvserver.migrations import migrate as run_migrations

    db = make_database(database_url)
    run_migrations(db)
    if hasattr(db, "close_all"):
        db.close_all()


def _user_name(iid: str) -> str:
    """`admin_` and 8 characters of [a-z0-9], as TemplateProvisioner generates (here from the id)."""
    return "admin_" + iid[-8:]


def _rows(start: int, stop: int, sealed_password: str) -> Iterator[tuple[Any, ...]]:
    """instance rows as isvserver writes them after provisioning (active, sealed password)."""
    from isvserver.marketplaces.koogallery.handlers import creation_key

    now = datetime.now(UTC).replace(tzinfo=None)
    created = str(now - timedelta(days=30))
    expire = str((now + timedelta(days=335)).replace(microsecond=0))
    for i in range(start, stop):
        iid = instance_id(i)
        order, line = order_of(i)
        q = iid  # hex and dashes: quote(iid, safe="") as render_url does would change nothing
        yield (
            iid,
            "koogallery",
            order,
            line,
            iid,
            "active",
            False,
            "00301-666666-0--0",
            expire,
            FRONTEND_TEMPLATE.format(instance_id=q),
            ADMIN_TEMPLATE.format(instance_id=q),
            _user_name(iid),
            sealed_password,
            None,
            created,
            created,
            None,
            creation_key(order, line, None),
        )


INSTANCE_COLUMNS = (
    "instance_id, marketplace, order_id, order_line_id, business_id, state, is_trial, product_id, "
    "expire_at, front_end_url, admin_url, user_name, password_encrypted, memo, created_at, updated_at, "
    "released_at, creation_key"
)
# The two events isvserver records for a provisioned instance (created, provisioned), set-based.
EVENTS_SQL = (
    "INSERT INTO instance_event (instance_ref, kind, from_state, to_state, order_id, order_line_id, "
    "idempotency_key, detail, created_at) "
    "SELECT id, 'created', 'provisioning', 'provisioning', order_id, order_line_id, NULL, "
    "'{\"business_id\": \"' || business_id || '\"}', created_at FROM instance WHERE id > {after} "
    "UNION ALL "
    "SELECT id, 'provisioned', 'provisioning', 'active', NULL, NULL, NULL, NULL, created_at "
    "FROM instance WHERE id > {after}"
)


def sealed_password(data_key: str) -> str:
    """One password sealed with the run's data key, as isvserver stores it (reused for every row)."""
    from isvserver.provisioning.template import generate_password
    from isvserver.sealing import seal

    return seal(data_key.encode("ascii"), generate_password())


def seed(database_url: str, start: int, stop: int, sealed: str) -> float:
    """Add instances start..stop-1 (with their events); return the seconds it took."""
    began = time.perf_counter()
    if database_url.startswith("sqlite:///"):
        _seed_sqlite(database_url[len("sqlite:///") :], start, stop, sealed)
    else:
        _seed_postgres(database_url, start, stop, sealed)
    return time.perf_counter() - began


def _seed_sqlite(path: str, start: int, stop: int, sealed: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")  # seeding only; the server uses its own pragmas
        conn.execute("BEGIN")
        after = conn.execute("SELECT COALESCE(MAX(id), 0) FROM instance").fetchone()[0]
        conn.executemany(
            f"INSERT INTO instance ({INSTANCE_COLUMNS}) VALUES ({', '.join('?' * 18)})",  # noqa: S608
            (tuple(int(v) if isinstance(v, bool) else v for v in row) for row in _rows(start, stop, sealed)),
        )
        conn.execute(EVENTS_SQL.replace("{after}", str(int(after))))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _seed_postgres(url: str, start: int, stop: int, sealed: str) -> None:
    import psycopg

    with psycopg.connect(url, connect_timeout=10) as conn:
        after = conn.execute("SELECT COALESCE(MAX(id), 0) FROM instance").fetchone()[0]
        with conn.cursor() as cur, cur.copy(f"COPY instance ({INSTANCE_COLUMNS}) FROM STDIN") as copy:
            for row in _rows(start, stop, sealed):
                copy.write_row(row)
        conn.execute(EVENTS_SQL.replace("{after}", str(int(after))))
        conn.commit()
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("VACUUM ANALYZE")  # what autovacuum would do soon after; not during a run
        conn.execute("CHECKPOINT")  # write the seeded pages now, not in the checkpointer during a run


def count_instances(database_url: str) -> int:
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url[len("sqlite:///") :]) as conn:
            return conn.execute("SELECT COUNT(*) FROM instance").fetchone()[0]
    import psycopg

    with psycopg.connect(database_url, connect_timeout=10) as conn:
        return conn.execute("SELECT COUNT(*) FROM instance").fetchone()[0]


def callback_summary(database_url: str) -> list[tuple[Any, ...]]:
    """(activity, verdict, result_code, count) over the callback log: the server's own account."""
    sql = (
        "SELECT activity, verdict, result_code, COUNT(*) FROM callback_log "
        "GROUP BY activity, verdict, result_code ORDER BY activity, verdict, result_code"
    )
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url[len("sqlite:///") :]) as conn:
            return conn.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(database_url, connect_timeout=10) as conn:
        return conn.execute(sql).fetchall()
