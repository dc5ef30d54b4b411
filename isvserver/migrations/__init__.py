"""Versioned schema migrations: numbered SQL scripts, applied once, in order, under a lock.

The core's scripts live here and are recorded in `schema_version`; each adapter package may ship its own in
`isvserver/marketplaces/<adapter>/migrations/NNNN_name.sql`, recorded per adapter in `adapter_schema_version`.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from peewee import Database, Table

from isvserver.db import connected, is_postgres
from isvserver.models import utcnow

MIGRATIONS_DIR = Path(__file__).parent
ADAPTERS_PACKAGE = "isvserver.marketplaces"  # the namespace of the adapters (its __init__ holds no code)
PARTS_PACKAGE = "isvserver.parts"  # the application parts' (recorded like an adapter's, by the part's name)
NAME = re.compile(r"(\d{4})_(\w+)\.sql")
DIALECT = {
    "sqlite": {"pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "fk": "INTEGER"},
    "postgres": {"pk": "BIGSERIAL PRIMARY KEY", "fk": "BIGINT"},
}
SchemaVersion = Table("schema_version", ("version", "name", "applied_at"))
AdapterSchemaVersion = Table("adapter_schema_version", ("adapter", "version", "name", "applied_at"))
ADVISORY_LOCK_ID = 0x15F5E7E7  # any fixed number: serialises concurrent `isvserver migrate` runs


@dataclass(frozen=True)
class Migration:
    """One numbered SQL script: the core's (`adapter` empty) or an adapter package's."""

    version: int
    name: str  # an adapter's carries its package: "koogallery_kit/sync", so `0001_koogallery_kit/sync`
    path: Path
    adapter: str = ""

    @property
    def script_name(self) -> str:
        """The name part of the file name (what the version tables record)."""
        return self.name.removeprefix(f"{self.adapter}/") if self.adapter else self.name

    @property
    def rebuilds_tables(self) -> bool:
        """Whether the script starts `-- rebuilds tables` (SQLite then runs it with foreign keys off)."""
        return self.path.read_text(encoding="utf-8").startswith("-- rebuilds tables")

    @property
    def label(self) -> str:
        """How an operator reads it: `0003_jobs`, `koogallery_kit/0001_sync`."""
        prefix = f"{self.adapter}/" if self.adapter else ""
        return f"{prefix}{self.version:04d}_{self.script_name}"

    def statements(self, dialect: str) -> list[str]:
        """The script's statements with dialect placeholders filled in."""
        text = "\n".join(
            line for line in self.path.read_text(encoding="utf-8").splitlines() if not line.startswith("--")
        )
        text = text.replace("{pk}", DIALECT[dialect]["pk"]).replace("{fk}", DIALECT[dialect]["fk"])
        statements = [s.strip() for s in text.split(";") if s.strip()]
        # A statement starting with @sqlite or @postgres runs on that dialect only.
        return [
            s.removeprefix(f"@{dialect}").strip()
            for s in statements
            if not s.startswith("@") or s.startswith(f"@{dialect} ")
        ]


def _scripts(folder: Path, adapter: str = "") -> list[Migration]:
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = NAME.fullmatch(path.name)
        if match:
            name = f"{adapter}/{match.group(2)}" if adapter else match.group(2)
            found.append(Migration(int(match.group(1)), name, path, adapter))
    return found


def adapter_dirs() -> dict[str, Path]:
    """Each adapter or part package that ships migrations, by name (found on disk: none is imported)."""
    found = {}
    for package in (ADAPTERS_PACKAGE, PARTS_PACKAGE):
        for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
            base = getattr(module.module_finder, "path", None)  # a FileFinder: the packages are folders
            if not module.ispkg or base is None:
                continue
            folder = Path(base) / module.name / "migrations"
            if folder.is_dir():
                found[module.name] = folder
    return dict(sorted(found.items()))


def available() -> list[Migration]:
    """Every migration shipped with this version, in order: the core's, then each adapter's."""
    found = _scripts(MIGRATIONS_DIR)
    for adapter, folder in adapter_dirs().items():
        found.extend(_scripts(folder, adapter))
    return found


def _ensure_version_tables(db: Database) -> None:
    db.execute_sql(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "version INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    db.execute_sql(
        "CREATE TABLE IF NOT EXISTS adapter_schema_version ("
        "adapter VARCHAR(32) NOT NULL, version INTEGER NOT NULL, name VARCHAR(100) NOT NULL, "
        "applied_at TIMESTAMP NOT NULL, PRIMARY KEY (adapter, version))"
    )


def applied_versions(db: Database) -> set[int]:
    """Core versions recorded in schema_version (empty when the table does not exist yet)."""
    if "schema_version" not in db.get_tables():
        return set()
    return {row[0] for row in db.execute_sql("SELECT version FROM schema_version").fetchall()}


def applied_adapter_versions(db: Database) -> set[tuple[str, int]]:
    """(adapter, version) pairs recorded in adapter_schema_version (empty before the table exists)."""
    if "adapter_schema_version" not in db.get_tables():
        return set()
    rows = db.execute_sql("SELECT adapter, version FROM adapter_schema_version").fetchall()
    return {(row[0], row[1]) for row in rows}


def _is_applied(db: Database, migration: Migration) -> bool:
    if migration.adapter:
        return (migration.adapter, migration.version) in applied_adapter_versions(db)
    return migration.version in applied_versions(db)


def pending(db: Database) -> list[Migration]:
    """Migrations (the core's and the adapters') not yet applied to `db`."""
    with connected(db):
        done = applied_versions(db)
        done_adapter = applied_adapter_versions(db)
    return [
        m
        for m in available()
        if ((m.adapter, m.version) not in done_adapter if m.adapter else m.version not in done)
    ]


def _record(db: Database, migration: Migration) -> None:
    if migration.adapter:
        AdapterSchemaVersion.insert(
            adapter=migration.adapter,
            version=migration.version,
            name=migration.script_name,
            applied_at=utcnow(),
        ).bind(db).execute()
    else:
        SchemaVersion.insert(version=migration.version, name=migration.name, applied_at=utcnow()).bind(
            db
        ).execute()


def migrate(db: Database) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; return what was applied."""
    dialect = "postgres" if is_postgres(db) else "sqlite"
    applied = []
    with connected(db):
        with db.atomic():
            if dialect == "postgres":
                db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_ID,))
            _ensure_version_tables(db)
        for migration in available():
            with _rebuilding(db, migration.rebuilds_tables and dialect == "sqlite"), db.atomic():
                if dialect == "postgres":
                    db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_ID,))
                if _is_applied(db, migration):
                    continue
                for statement in migration.statements(dialect):
                    db.execute_sql(statement)
                if migration.rebuilds_tables and dialect == "sqlite":
                    broken = db.execute_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"{migration.label}: {len(broken)} rows lost their parent row")
                _record(db, migration)
                applied.append(migration)
    return applied


@contextmanager
def _rebuilding(db: Database, rebuild: bool) -> Iterator[None]:
    """SQLite rebuilds a table (to drop a constraint) only with foreign keys off, outside a transaction
    (its documented procedure); they are checked before the commit and turned on again after it."""
    if not rebuild:
        yield
        return
    db.execute_sql("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        db.execute_sql("PRAGMA foreign_keys = ON")
