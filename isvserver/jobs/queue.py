"""The job queue: huey, in a local SQLite file by default or in Redis (ISV_QUEUE_URL) for several hosts."""

from __future__ import annotations

from huey import Huey, RedisHuey, SqliteHuey

from isvserver.files import private_dir, private_sqlite
from isvserver.settings import Settings, redacted_url

QUEUE_NAME = "isvserver"
QUEUE_FILE = "queue.sqlite3"


def make_huey(settings: Settings) -> Huey:
    """The huey instance of these settings (nothing is stored in it but task messages; no results)."""
    if settings.queue_url:
        return RedisHuey(QUEUE_NAME, url=settings.queue_url, results=False, utc=True)
    private_dir(settings.instance_dir)
    private_sqlite(settings.instance_dir / QUEUE_FILE)
    return SqliteHuey(
        QUEUE_NAME, filename=str(settings.instance_dir / QUEUE_FILE), results=False, utc=True, timeout=5
    )


def describe(settings: Settings) -> str:
    """Where the queue lives, safe to print (no password)."""
    if settings.queue_url:
        return redacted_url(settings.queue_url)
    return str(settings.instance_dir / QUEUE_FILE)
