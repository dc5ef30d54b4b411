"""Data-key rotation: seal every stored secret again with the first ISV_DATA_KEY key (`isvserver reseal`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from peewee import Field

from isvserver.adapters import all_parts, available, load
from isvserver.db import connected, database
from isvserver.keystore import AccessKey
from isvserver.models import BaseModel, Instance
from isvserver.sealing import UnsealError, reseal, sealed_with_first
from isvserver.settings import Settings

BATCH_SIZE = 500  # rows per write transaction: a running server waits at most one short batch


@dataclass(frozen=True)
class SealedColumn:
    """A column of sealed secrets, and the column that names its rows to an operator."""

    model: type[BaseModel]
    secret: Field
    name: Field


SEALED_COLUMNS = (
    SealedColumn(Instance, Instance.password_encrypted, Instance.instance_id),
    SealedColumn(AccessKey, AccessKey.key_sealed, AccessKey.fingerprint),
)


def sealed_columns() -> tuple[SealedColumn, ...]:
    """The core's sealed columns and those of every installed adapter and application part, enabled or
    not (`isvserver migrate` creates every one's tables, and a once-enabled one's secrets stay sealed with
    the old key)."""
    owners = (*map(load, available()), *all_parts())
    own = (
        SealedColumn(secret.model, secret, name) for owner in owners for secret, name in owner.sealed_columns
    )
    return (*SEALED_COLUMNS, *own)


def unknown_adapters() -> list[str]:
    """Adapters (or parts) whose tables the database holds (their migrations are recorded) but which are
    not installed here: their sealed columns cannot be known, so they are not resealed."""
    from isvserver.migrations import applied_adapter_versions

    installed = {*available(), *(part.name for part in all_parts())}
    return sorted({name for name, _ in applied_adapter_versions(database.obj)} - installed)


@dataclass(frozen=True)
class Unreadable:
    """A stored secret no ISV_DATA_KEY key opens: where it is, never what it is."""

    table: str
    row_id: int
    name_column: str
    name: str


@dataclass
class ColumnReport:
    """What resealing did to one column."""

    table: str
    column: str
    resealed: int = 0
    current: int = 0
    changed_meanwhile: int = 0
    unreadable: list[Unreadable] = field(default_factory=list)


@dataclass
class RotationReport:
    """What resealing did, per column."""

    columns: list[ColumnReport]
    unknown_adapters: list[str] = field(default_factory=list)

    @property
    def resealed(self) -> int:
        """Secrets sealed again with the first key."""
        return sum(c.resealed for c in self.columns)

    @property
    def current(self) -> int:
        """Secrets already sealed with the first key, left as they were."""
        return sum(c.current for c in self.columns)

    @property
    def changed_meanwhile(self) -> int:
        """Secrets another writer changed between reading and resealing them (left to that writer)."""
        return sum(c.changed_meanwhile for c in self.columns)

    @property
    def unreadable(self) -> list[Unreadable]:
        """Secrets no key opens, left as they were."""
        return [u for c in self.columns for u in c.unreadable]


def _reseal_batch(
    column: SealedColumn, keys: tuple[bytes, ...], after: int, size: int, report: ColumnReport
) -> int:
    """Reseal up to `size` rows with an id above `after`; the last id read, or 0 when none was left."""
    model, pk = column.model, column.model._meta.primary_key
    rows = list(
        model.select(pk, column.secret, column.name)
        .where(column.secret.is_null(False) & (pk > after))
        .order_by(pk)
        .limit(size)
        .tuples()
    )
    if not rows:
        return 0
    changes = []
    for row_id, token, name in rows:
        if sealed_with_first(keys, token):
            report.current += 1
            continue
        try:
            changes.append((row_id, token, reseal(keys, token)))
        except UnsealError:
            report.unreadable.append(Unreadable(report.table, row_id, column.name.name, name))
    if changes:
        _write(column, changes, report)
    return rows[-1][0]


def _write(column: SealedColumn, changes: list[tuple[int, str, str]], report: ColumnReport) -> None:
    """Store the resealed secrets in one transaction, each only if nobody changed it since it was read."""
    pk = column.model._meta.primary_key
    # One statement for the batch, in the dialect's quoting and placeholders; its parameters are, in
    # order: the new value, the row id, the value read. executemany's rowcount is the rows it changed.
    sql, _ = column.model.update({column.secret: ""}).where((pk == 0) & (column.secret == "")).sql()
    with database.atomic():  # decrypted beforehand: the write lock is held only for the updates
        cursor = database.cursor()
        cursor.executemany(sql, [(new, row_id, old) for row_id, old, new in changes])
        updated = cursor.rowcount
        cursor.close()
    report.resealed += updated
    report.changed_meanwhile += len(changes) - updated


def reseal_all(settings: Settings, batch_size: int = BATCH_SIZE) -> RotationReport:
    """Reseal every stored secret not sealed with the first data key, in batches, on the bound database."""
    keys = settings.data_keys
    report = RotationReport([])
    with connected():
        tables = set(database.get_tables())
        report.unknown_adapters = unknown_adapters()
        for column in sealed_columns():
            if column.model._meta.table_name not in tables:
                continue  # an adapter installed after the last `isvserver migrate`: nothing stored yet
            column_report = ColumnReport(column.model._meta.table_name, column.secret.column_name)
            report.columns.append(column_report)
            last = _reseal_batch(column, keys, 0, batch_size, column_report)
            while last:
                last = _reseal_batch(column, keys, last, batch_size, column_report)
    return report
