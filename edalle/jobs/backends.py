"""Choosing the job store from one setting: `EDALLE_DATABASE_URL=postgresql://…` means PostgreSQL (workers
on many hosts); unset means the embedded SQLite file in the data dir (one host). The bot and the worker
both open their store here, so they can never disagree about which database they share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edalle.jobs.store import JobStore

POSTGRES_SCHEMES = ('postgresql://', 'postgres://')


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and url.strip().lower().startswith(POSTGRES_SCHEMES)  # type: ignore[union-attr]


def describe(database_url: str | None, sqlite_path: Path | str) -> str:
    """Where the store is, for logs (a PostgreSQL URL without its password)."""
    if is_postgres_url(database_url):
        from edalle.jobs.postgres import _safe_url

        return _safe_url(database_url.strip())  # type: ignore[union-attr]
    return str(sqlite_path)


async def open_store(database_url: str | None, sqlite_path: Path | str, **kwargs: Any) -> JobStore:
    """PostgreSQL when `database_url` is a postgresql:// URL, else SQLite at `sqlite_path` (migrations applied).

    A `sqlite:///path` URL also names the SQLite file, for symmetry; anything else is refused with a
    sentence naming the setting.
    """
    url = (database_url or '').strip()
    if not url:
        from edalle.jobs.sqlite import SqliteJobStore

        return await SqliteJobStore.open(sqlite_path, **kwargs)
    if is_postgres_url(url):
        from edalle.jobs.postgres import PostgresJobStore  # asyncpg only where it is used

        return await PostgresJobStore.open(url, **kwargs)
    if url.startswith('sqlite:///'):
        from edalle.jobs.sqlite import SqliteJobStore

        return await SqliteJobStore.open(url.removeprefix('sqlite:///'), **kwargs)
    scheme = url.split('://', 1)[0] if '://' in url else 'no scheme'
    raise ValueError(
        f'EDALLE_DATABASE_URL must be postgresql://user:password@host:port/dbname, or unset for SQLite (got {scheme})'
    )
