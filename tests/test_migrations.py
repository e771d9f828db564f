"""Migrations that move data: admins' `daily_expands` values become `daily_edits` on both databases, and the
installed package carries every migration (the top-level migrations/ folder is installed as edalle.migrations)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import asyncpg
import pytest
from pg_server import shared_server

from edalle.db import connect, load_migrations, migrations_dir
from edalle.jobs import SqliteJobStore
from edalle.jobs.postgres import MIGRATIONS_DIR, PostgresJobStore

REPO = Path(__file__).resolve().parent.parent

# (guild, user or None, key, JSON value) as an older edalle wrote them
OLD_ROWS = [
    (10, None, 'daily_expands', '4'),
    (11, None, 'daily_expands', '6'),
    (11, None, 'daily_edits', '7'),  # already set under the new name: it wins
    (10, 5, 'daily_expands', '2'),
]


def expect_limits(limits_10: object, limits_11: object, user_5: object) -> None:
    assert limits_10.daily_edits == 4 and limits_11.daily_edits == 7 and user_5.daily_edits == 2  # type: ignore[attr-defined]


def test_daily_expands_rows_carry_over_to_daily_edits_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / 'edalle.db'

    async def main() -> None:
        conn = await connect(path, migrations=load_migrations()[:1])
        await conn.close()
        with sqlite3.connect(path) as db:
            for guild, user, key, value in OLD_ROWS:
                table, keys = ('guild_settings', (guild,)) if user is None else ('user_overrides', (guild, user))
                columns = 'guild_id' if user is None else 'guild_id, user_id'
                marks = ', '.join('?' * (len(keys) + 3))
                db.execute(
                    f'INSERT INTO {table} ({columns}, key, value, updated_at) VALUES ({marks})', (*keys, key, value, 0)
                )
        store = await SqliteJobStore.open(path)
        try:
            expect_limits(await store.get_limits(10), await store.get_limits(11), await store.get_limits(10, 5))
        finally:
            await store.close()
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM guild_settings WHERE key = 'daily_expands'").fetchone()[0] == 0
            assert db.execute("SELECT count(*) FROM user_overrides WHERE key = 'daily_expands'").fetchone()[0] == 0

    asyncio.run(main())


def test_daily_expands_rows_carry_over_to_daily_edits_on_postgres() -> None:
    url = shared_server().create_database()

    async def main() -> None:
        store = await PostgresJobStore.open(url, migrations=load_migrations(MIGRATIONS_DIR)[:1])
        await store.close()
        conn = await asyncpg.connect(url)
        try:
            for guild, user, key, value in OLD_ROWS:
                if user is None:
                    query = 'INSERT INTO guild_settings (guild_id, key, value, updated_at) VALUES ($1, $2, $3, 0)'
                    await conn.execute(query, guild, key, value)
                else:
                    query = (
                        'INSERT INTO user_overrides (guild_id, user_id, key, value, updated_at) VALUES ($1, $2, $3, $4, 0)'
                    )
                    await conn.execute(query, guild, user, key, value)
        finally:
            await conn.close()
        store = await PostgresJobStore.open(url)
        try:
            expect_limits(await store.get_limits(10), await store.get_limits(11), await store.get_limits(10, 5))
        finally:
            await store.close()

    asyncio.run(main())


def test_the_migrations_are_read_from_the_top_level_folder() -> None:
    assert migrations_dir('sqlite') == REPO / 'migrations' / 'sqlite'
    sqlite, postgres = load_migrations(), load_migrations(MIGRATIONS_DIR)
    assert [m.version for m in sqlite] == [m.version for m in postgres] == list(range(1, len(sqlite) + 1))
    assert [m.name for m in sqlite] == [m.name for m in postgres]  # one change, written for each database


@pytest.mark.slow
def test_the_wheel_carries_every_module_and_every_migration(tmp_path: Path) -> None:
    """`pip install .` (and the Docker image) get what an editable install reads from the repository."""
    source = tmp_path / 'source'  # a copy: building in place would leave build/ and *.egg-info in the repository
    for name in ('pyproject.toml', 'README.md', 'LICENSE'):
        source.mkdir(exist_ok=True)
        shutil.copy(REPO / name, source / name)
    for folder in ('edalle', 'bot', 'migrations'):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns('__pycache__'))
    subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--quiet', '--wheel-dir', str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob('edalle-*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {
        f'edalle/migrations/{p.relative_to(REPO / "migrations").as_posix()}' for p in (REPO / 'migrations').rglob('*.sql')
    }
    assert migrations and migrations <= names, migrations - names
    modules = {p.relative_to(REPO).as_posix() for package in ('edalle', 'bot') for p in (REPO / package).rglob('*.py')}
    assert modules <= names, modules - names
    assert 'edalle/migrations/__init__.py' in names and not any(n.startswith('migrations/') for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith('.dist-info/METADATA'))).decode()
    assert 'License-Expression: MIT' in metadata and any(n.endswith('.dist-info/licenses/LICENSE') for n in names)
    assert 'Provides-Extra: worker' in metadata and 'Requires-Dist: torch>=2.4; extra == "worker"' in metadata
