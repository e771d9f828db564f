"""Migrations: from an empty file, re-run, concurrent start-up, and a too-new schema refused."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from edalle.db import Migration, connect, load_migrations, schema_version, split_statements
from edalle.errors import SchemaTooNew


def tables(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_migrations_apply_to_an_empty_file(tmp_path):
    path = tmp_path / 'edalle.db'
    path.write_bytes(b'')  # an empty file is an empty database

    async def main():
        conn = await connect(path)
        try:
            version = await schema_version(conn)
            async with conn.execute('PRAGMA journal_mode') as cursor:
                mode = (await cursor.fetchone())[0]
            async with conn.execute('PRAGMA busy_timeout') as cursor:
                busy = (await cursor.fetchone())[0]
        finally:
            await conn.close()
        return version, mode, busy

    version, mode, busy = asyncio.run(main())
    assert version == load_migrations()[-1].version
    assert mode == 'wal' and busy > 0
    assert {
        'jobs',
        'guild_settings',
        'user_overrides',
        'user_bans',
        'admin_actions',
        'workers',
        'schema_migrations',
    } <= tables(path)


def test_rerunning_migrations_changes_nothing(tmp_path):
    path = tmp_path / 'edalle.db'

    async def main():
        for _ in range(3):
            conn = await connect(path)
            await conn.close()

    asyncio.run(main())
    with sqlite3.connect(path) as conn:
        rows = conn.execute('SELECT version, name FROM schema_migrations ORDER BY version').fetchall()
    assert [r[0] for r in rows] == [m.version for m in load_migrations()]


def test_processes_starting_together_migrate_once(tmp_path):
    path = tmp_path / 'edalle.db'

    async def main():
        conns = await asyncio.gather(*(connect(path) for _ in range(4)))
        versions = [await schema_version(c) for c in conns]
        for c in conns:
            await c.close()
        return versions

    assert len(set(asyncio.run(main()))) == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute('SELECT count(*) FROM schema_migrations').fetchone()[0] == len(load_migrations())


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / 'edalle.db'
    asyncio.run(_open_close(path))
    known = load_migrations()[-1].version
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, 'from_the_future', 'x')", (known + 1,)
        )
    with pytest.raises(SchemaTooNew) as caught:
        asyncio.run(_open_close(path))
    message = str(caught.value)
    assert f'schema version {known + 1}' in message and f'up to {known}' in message and 'Upgrade edalle' in message
    with pytest.raises(SchemaTooNew):
        asyncio.run(_open_close(path, migrate=False))


def test_a_failing_migration_leaves_nothing_behind(tmp_path):
    path = tmp_path / 'edalle.db'
    good = Migration(1, 'one', 'CREATE TABLE a (x INTEGER);')
    bad = Migration(2, 'two', 'CREATE TABLE b (x INTEGER);\nINSERT INTO no_such_table VALUES (1);')

    async def main():
        with pytest.raises(sqlite3.OperationalError):
            await connect(path, migrations=[good, bad])
        conn = await connect(path, migrations=[good])
        version = await schema_version(conn)
        await conn.close()
        return version

    assert asyncio.run(main()) == 1
    assert 'a' in tables(path) and 'b' not in tables(path)  # migration 2 rolled back as a whole


def test_split_statements_keeps_triggers_whole_and_drops_comments():
    sql = """
        -- header
        CREATE TABLE t (x INTEGER); -- trailing
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN
            UPDATE t SET x = x + 1; SELECT 1;
        END;
        -- only a comment at the end
    """
    statements = split_statements(sql)
    assert len(statements) == 2 and statements[1].startswith('CREATE TRIGGER') and statements[1].endswith('END;')


def test_migration_files_are_numbered_without_gaps():
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(m.sql.startswith('-- Revises:') for m in migrations)  # the three-line header


async def _open_close(path, **kwargs):
    conn = await connect(path, **kwargs)
    await conn.close()
