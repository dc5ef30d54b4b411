"""Replay protection: every accepted nonce is stored in the database shared by all workers."""

from __future__ import annotations

import hashlib
import random

from isvserver.models import Nonce

PRUNE_ONE_IN = 200  # about one call in this many also deletes nonces past their keeping time


def first_use(scope: str, nonce: str, now_ms: int, keep_ms: int) -> bool:
    """Record `nonce`; False when it was seen before within its keeping time (a replay)."""
    digest = hashlib.sha256(f"{scope}\n{nonce}".encode()).hexdigest()
    inserted = Nonce.insert(digest=digest, seen_at=now_ms).on_conflict_ignore().as_rowcount().execute()
    if not inserted:
        return False
    if random.randrange(PRUNE_ONE_IN) == 0:
        prune(now_ms - keep_ms)
    return True


def prune(before_ms: int) -> int:
    """Forget nonces seen before `before_ms`; their timestamps can no longer pass the window."""
    return Nonce.delete().where(Nonce.seen_at < before_ms).execute()
