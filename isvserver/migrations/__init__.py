"""Versioned schema migrations: numbered SQL scripts, applied once, in order, under a lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from peewee import Database, Table

from isvserver.db import connected, is_postgres
from isvserver.models import utcnow

MIGRATIONS_DIR = Path(__file__).parent
NAME = re.compile(r"(\d{4})_(\w+)\.sql")
DIALECT = {
    "sqlite": {"pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "fk": "INTEGER"},
    "postgres": {"pk": "BIGSERIAL PRIMARY KEY", "fk": "BIGINT"},
}
SchemaVersion = Table("schema_version", ("version", "name", "applied_at"))
ADVISORY_LOCK_ID = 0x15F5E7E7  # any fixed number: serialises concurrent `isvserver migrate` runs


@dataclass(frozen=True)
class Migration:
    """One numbered SQL script."""

    version: int
    name: str
    path: Path

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


def available() -> list[Migration]:
    """Every migration shipped with this version, in order."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = NAME.fullmatch(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path))
    return found


def _ensure_version_table(db: Database) -> None:
    db.execute_sql(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "version INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )


def applied_versions(db: Database) -> set[int]:
    """Versions recorded in schema_version (empty when the table does not exist yet)."""
    if "schema_version" not in db.get_tables():
        return set()
    return {row[0] for row in db.execute_sql("SELECT version FROM schema_version").fetchall()}


def pending(db: Database) -> list[Migration]:
    """Migrations not yet applied to `db`."""
    with connected(db):
        done = applied_versions(db)
    return [m for m in available() if m.version not in done]


def migrate(db: Database) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; return what was applied."""
    dialect = "postgres" if is_postgres(db) else "sqlite"
    applied = []
    with connected(db):
        with db.atomic():
            if dialect == "postgres":
                db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_ID,))
            _ensure_version_table(db)
        for migration in available():
            with db.atomic():
                if dialect == "postgres":
                    db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_ID,))
                if migration.version in applied_versions(db):
                    continue
                for statement in migration.statements(dialect):
                    db.execute_sql(statement)
                SchemaVersion.insert(
                    version=migration.version, name=migration.name, applied_at=utcnow()
                ).bind(db).execute()
                applied.append(migration)
    return applied
