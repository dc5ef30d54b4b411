"""Access keys in the database, beside the environment's: added and retired while every worker runs."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from peewee import CharField, Database, DateTimeField, IntegrityError, TextField

from isvserver.adapters import KeyInterface, load
from isvserver.db import connected, database, ident, is_postgres, names, statement
from isvserver.models import BaseModel, utcnow
from isvserver.sealing import UnsealError, seal, unseal
from isvserver.settings import MIN_PRODUCTION_KEY_LENGTH, Settings

ENV, STORED = "env", "stored"
FINGERPRINT_LENGTH = 16
NOTE_LENGTH = 100
LOCK_ID = 0x15F5E7E8  # serialises concurrent adds and retires on PostgreSQL (SQLite's write lock does it)

log = logging.getLogger("isvserver.keystore")


class KeyStoreError(Exception):
    """A key cannot be added or retired; the message says why, never the key."""


class AccessKey(BaseModel):
    """A stored key of an interface (sealed with ISV_DATA_KEY), or the retirement of an environment key."""

    interface = CharField(max_length=16)
    fingerprint = CharField(max_length=FINGERPRINT_LENGTH, unique=True)
    key_sealed = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    retired_at = DateTimeField(null=True)
    note = CharField(max_length=NOTE_LENGTH, null=True)

    class Meta:
        table_name = "access_key"


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never the key itself."""

    interface: str
    fingerprint: str
    source: str
    created_at: datetime | None
    retired_at: datetime | None
    note: str | None

    @property
    def active(self) -> bool:
        """Whether calls signed with this key are accepted."""
        return self.retired_at is None


@lru_cache(maxsize=256)
def fingerprint(key: str) -> str:
    """The first 16 hex characters of the key's SHA-256: names a key without revealing it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:FINGERPRINT_LENGTH]


@lru_cache(maxsize=256)
def _unsealed(data_keys: tuple[bytes, ...], token: str) -> str | None:
    """The stored key, or None (logged once per process) when no ISV_DATA_KEY key opens it."""
    try:
        return unseal(data_keys, token)
    except UnsealError:
        log.warning("a stored access key cannot be decrypted with ISV_DATA_KEY; it is not accepted")
        return None


def env_keys(settings: Settings, interface: str) -> tuple[str, ...]:
    """The keys of `interface` configured in the environment."""
    return settings.keys(interface)


def interfaces(settings: Settings) -> dict[str, KeyInterface]:
    """The key interfaces the enabled adapters declare, by name."""
    return {i.name: i for name in settings.marketplaces for i in load(name).key_interfaces}


def _rows() -> list[AccessKey]:
    """Every access_key row, oldest first (the table holds a handful)."""
    return list(AccessKey.select().order_by(AccessKey.created_at, AccessKey.id))


def _lock() -> None:
    """Serialise this transaction with other adds and retires."""
    if is_postgres(database):
        database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))


def _keys_sql(db: Database) -> str:
    columns = (AccessKey.interface, AccessKey.fingerprint, AccessKey.key_sealed, AccessKey.retired_at)
    return (
        f"SELECT {names(db, *(c.column_name for c in columns))} FROM {ident(db, AccessKey._meta.table_name)} "  # noqa: S608 (names from the model)
        f"ORDER BY {names(db, AccessKey.created_at.column_name, AccessKey.id.column_name)}"
    )


def verification_keys(settings: Settings, interface: str) -> tuple[str, ...]:
    """The active keys of `interface`: environment keys not retired, then stored active keys, oldest first.

    The access_key rows are read on every call (a key added or retired counts in every worker at
    once); only turning the same rows into the same keys is remembered.
    """
    with connected():
        rows = tuple(map(tuple, database.execute_sql(statement("access_key.rows", _keys_sql)).fetchall()))
    return _active_keys(env_keys(settings, interface), settings.data_keys, interface, rows)


@lru_cache(maxsize=64)
def _active_keys(
    env: tuple[str, ...], data_keys: tuple[bytes, ...], interface: str, rows: tuple[tuple[Any, ...], ...]
) -> tuple[str, ...]:
    """The active keys of `interface` given the environment's keys and these access_key rows."""
    retired = {fp for _, fp, _, retired_at in rows if retired_at is not None}
    keys = [key for key in env if fingerprint(key) not in retired]
    for row_interface, _, sealed, retired_at in rows:
        if row_interface == interface and retired_at is None and sealed:
            key = _unsealed(data_keys, sealed)
            if key is not None and key not in keys:
                keys.append(key)
    return tuple(keys)


def list_keys(settings: Settings) -> list[KeyInfo]:
    """Every key per interface, in verification order: environment, stored; retired ones included."""
    with connected():
        rows = _rows()
    by_fingerprint = {row.fingerprint: row for row in rows}
    infos = []
    for interface in interfaces(settings):
        configured = {fingerprint(key) for key in env_keys(settings, interface)}
        for fp in dict.fromkeys(fingerprint(key) for key in env_keys(settings, interface)):
            row = by_fingerprint.get(fp)
            retired_at, note = (row.retired_at, row.note) if row is not None else (None, None)
            infos.append(KeyInfo(interface, fp, ENV, None, retired_at, note))
        for row in rows:
            if row.interface != interface or (row.key_sealed is None and row.fingerprint in configured):
                continue
            source = STORED if row.key_sealed is not None else ENV  # an env key retired, since removed
            infos.append(
                KeyInfo(interface, row.fingerprint, source, row.created_at, row.retired_at, row.note)
            )
    return infos


def check_key(key: str, production: bool = False) -> str:
    """The key, stripped, when it is usable (the rules of ISV_ACCESS_KEYS, the production minimum in
    production); KeyStoreError otherwise."""
    key = key.strip()
    if len(key) < 8 or not key.isascii() or not key.isprintable():
        raise KeyStoreError("a key must be at least 8 printable ASCII characters")
    if "," in key:
        raise KeyStoreError("a key must not contain a comma (the environment lists keys comma-separated)")
    if production and len(key) < MIN_PRODUCTION_KEY_LENGTH:
        raise KeyStoreError(f"a key must be at least {MIN_PRODUCTION_KEY_LENGTH} characters in production")
    return key


def _check_note(note: str | None) -> str | None:
    if note is None or not note.strip():
        return None
    note = note.strip()
    if len(note) > NOTE_LENGTH or not note.isprintable():
        raise KeyStoreError(f"a note must be at most {NOTE_LENGTH} printable characters")
    return note


def _check_interface(settings: Settings, interface: str) -> None:
    known = interfaces(settings)
    if interface not in known:
        raise KeyStoreError(f"interface must be one of {', '.join(known)}")


def add_key(settings: Settings, interface: str, key: str, note: str | None = None) -> str:
    """Store `key` for `interface`, sealed with ISV_DATA_KEY, active at once; return its fingerprint."""
    _check_interface(settings, interface)
    key = check_key(key, settings.env == "production")
    note = _check_note(note)
    fp = fingerprint(key)
    try:
        with connected(), database.atomic():
            _lock()
            row = AccessKey.select().where(AccessKey.fingerprint == fp).first()
            if row is not None and row.retired_at is not None:
                raise KeyStoreError(
                    f"key {fp} was retired; a retired key cannot be used again: generate a new one"
                )
            for other in interfaces(settings).values():
                if key in env_keys(settings, other.name):
                    raise KeyStoreError(
                        f"key {fp} is already active: it is in {other.env_var} ({other.name} interface)"
                    )
            if row is not None:
                raise KeyStoreError(f"key {fp} is already stored as an active {row.interface} key")
            AccessKey.create(
                interface=interface,
                fingerprint=fp,
                key_sealed=seal(settings.data_key, key),
                created_at=utcnow(),
                note=note,
            )
    except IntegrityError:  # the same key added at the same moment elsewhere
        raise KeyStoreError(f"key {fp} is already stored") from None
    return fp


def retire_key(settings: Settings, fp: str, note: str | None = None) -> None:
    """Stop accepting the key with fingerprint `fp` in every worker at once (stored or environment key).

    The last active key of an interface that requires one cannot be retired: add its successor first.
    """
    fp = fp.strip().lower()
    note = _check_note(note)
    with connected(), database.atomic():
        _lock()
        rows = _rows()
        row = next((r for r in rows if r.fingerprint == fp), None)
        if row is not None and row.retired_at is not None:
            raise KeyStoreError(f"key {fp} is already retired (since {row.retired_at:%Y-%m-%d %H:%M:%S} UTC)")
        known = interfaces(settings)
        env_interface = next(
            (i for i in known if fp in {fingerprint(k) for k in env_keys(settings, i)}), None
        )
        interface = row.interface if row is not None else env_interface
        if interface is None:
            raise KeyStoreError(f"no key has fingerprint {fp} (see `isvserver keys list`)")
        declared = known.get(interface)
        if declared is not None and declared.required:
            retired = {r.fingerprint for r in rows if r.retired_at is not None}
            stored = {r.fingerprint for r in rows if r.interface == interface and r.key_sealed}
            active = ({fingerprint(k) for k in env_keys(settings, interface)} | stored) - retired
            if active <= {fp}:
                raise KeyStoreError(
                    f"key {fp} is the last active key of the {interface} interface; "
                    f"add its successor first (`isvserver keys add {interface}`)"
                )
        now = utcnow()
        if row is not None:
            AccessKey.update(retired_at=now, note=note or row.note).where(AccessKey.id == row.id).execute()
        else:
            AccessKey.create(
                interface=interface,
                fingerprint=fp,
                key_sealed=None,
                created_at=now,
                retired_at=now,
                note=note or f"retired from {known[interface].env_var if interface in known else interface}",
            )
