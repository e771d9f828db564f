"""Opening the SQLite database and bringing its schema up to date.

Both the bot and the workers open `data/edalle.db` through `connect()`: WAL mode (readers never wait for
the writer), a busy timeout (writers queue for the lock instead of failing), foreign keys on, and the
migrations in `migrations/sqlite/NNNN_name.sql` applied in order, each in its own `BEGIN IMMEDIATE`
transaction and recorded in `schema_migrations`. Two processes that start at once are safe: the second
waits for the lock and then finds nothing left to do. A database whose schema is newer than the files
this copy ships is refused (`SchemaTooNew`): an old worker must not write to rows it does not understand.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from edalle.errors import SchemaTooNew

log = logging.getLogger(__name__)


def migrations_dir(database: str) -> Path:
    """The folder of one database's migrations (`sqlite` or `postgres`), wherever the package `edalle.migrations`
    is installed (the top-level `migrations/` folder, mapped into the package by pyproject.toml)."""
    from importlib.resources import files

    return Path(str(files('edalle.migrations') / database))


MIGRATIONS_DIR = migrations_dir('sqlite')
_MIGRATION_NAME = re.compile(r'^(\d{4})_(\w+)\.sql$')
DEFAULT_BUSY_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The numbered `.sql` files in `directory`, in order. Numbers must run 1, 2, 3 … without gaps."""
    migrations = []
    for path in sorted(directory.glob('*.sql')):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            continue  # e.g. a schema snapshot: not a migration
        migrations.append(Migration(int(match[1]), match[2], path.read_text(encoding='utf-8')))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f'migrations in {directory} must be numbered 0001, 0002, … without gaps; found {versions}')
    return migrations


def split_statements(sql: str) -> list[str]:
    """Cut a script into complete statements (triggers included) so each runs with `execute`.

    `executescript` would commit any open transaction first, which would break "each migration in its
    own transaction together with its `schema_migrations` row".
    """
    statements, buffer = [], ''
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if _strip_comments(buffer):
                statements.append(buffer.strip())
            buffer = ''
    if _strip_comments(buffer):
        raise ValueError(f'incomplete SQL statement at the end of a migration: {buffer.strip()[:80]!r}')
    return statements


def _strip_comments(sql: str) -> str:
    return '\n'.join(line.split('--', 1)[0] for line in sql.splitlines()).strip().strip(';').strip()


async def connect(
    path: str | Path,
    *,
    migrate: bool = True,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    migrations: list[Migration] | None = None,
) -> aiosqlite.Connection:
    """Open the database in autocommit mode (transactions are explicit `BEGIN IMMEDIATE`) and migrate it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        # PRAGMAs take no bound parameters; the value is an int we formatted ourselves.
        await conn.execute(f'PRAGMA busy_timeout = {int(busy_timeout_ms)}')
        await _use_wal(conn, busy_timeout_ms / 1000)
        await conn.execute('PRAGMA synchronous = NORMAL')  # safe with WAL: no corruption, at most the last commits lost
        await conn.execute('PRAGMA foreign_keys = ON')
        known = load_migrations() if migrations is None else migrations
        if migrate:
            await apply_migrations(conn, known, path=str(path))
        else:
            await check_schema_version(conn, known, path=str(path))
    except BaseException:
        await conn.close()
        raise
    return conn


async def _use_wal(conn: aiosqlite.Connection, timeout: float) -> None:
    """Switch to WAL (it sticks to the file). Retried here: the switch needs the file to itself, and SQLite
    answers "locked" at once, without its busy handler, when another process opens it at the same moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with conn.execute('PRAGMA journal_mode') as cursor:
                if (await cursor.fetchone())[0].lower() == 'wal':
                    return
            await conn.execute('PRAGMA journal_mode = WAL')
        except sqlite3.OperationalError as exc:
            if 'locked' not in str(exc) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


async def schema_version(conn: aiosqlite.Connection) -> int:
    """The highest applied migration, 0 for an empty database."""
    async with conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'") as cursor:
        if await cursor.fetchone() is None:
            return 0
    async with conn.execute('SELECT coalesce(max(version), 0) FROM schema_migrations') as cursor:
        return (await cursor.fetchone())[0]


async def check_schema_version(conn: aiosqlite.Connection, migrations: list[Migration], *, path: str) -> int:
    version = await schema_version(conn)
    known = migrations[-1].version if migrations else 0
    if version > known:
        raise SchemaTooNew(path, version, known)
    return version


async def apply_migrations(conn: aiosqlite.Connection, migrations: list[Migration], *, path: str = '?') -> list[int]:
    """Apply the pending migrations, each in one transaction; returns the versions applied now."""
    await check_schema_version(conn, migrations, path=path)
    applied_now = []
    for migration in migrations:
        await conn.execute('BEGIN IMMEDIATE')
        try:
            query = """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    INTEGER PRIMARY KEY,
                    name       TEXT NOT NULL,
                    checksum   TEXT NOT NULL,
                    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
                )
            """
            await conn.execute(query)
            # Re-read inside the lock: another process may have migrated while we waited.
            query = 'SELECT checksum FROM schema_migrations WHERE version = :version'
            async with conn.execute(query, {'version': migration.version}) as cursor:
                row = await cursor.fetchone()
            if row is not None:
                await conn.execute('ROLLBACK')
                if row[0] != migration.checksum:
                    log.warning(
                        'migration %04d_%s was changed after it was applied to %s', migration.version, migration.name, path
                    )
                continue
            for statement in split_statements(migration.sql):
                await conn.execute(statement)
            query = 'INSERT INTO schema_migrations (version, name, checksum) VALUES (:version, :name, :checksum)'
            await conn.execute(query, {'version': migration.version, 'name': migration.name, 'checksum': migration.checksum})
            await conn.execute('COMMIT')
        except BaseException:
            if conn.in_transaction:
                await conn.execute('ROLLBACK')
            raise
        log.info('applied migration %04d_%s to %s', migration.version, migration.name, path)
        applied_now.append(migration.version)
    # A newer process may have migrated past us while we ran.
    await check_schema_version(conn, migrations, path=path)
    return applied_now
