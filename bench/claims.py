"""Claim throughput of both job stores with a long queue: how fast workers can take fair batches.

    .venv/bin/python bench/claims.py                      # 2,000 and 20,000 queued, both stores
    .venv/bin/python bench/claims.py --queued 20000 --store postgres

For each store and queue length: fill the queue (200 users, one compat key, straight SQL: the fill is not
what is measured), then `--claimers` workers, each on connections of its own, claim batches of
`--batch` and complete every job they get (a fenced write each), until `--take` jobs are taken. The
queue stays within `--take` of its starting length, so the figure belongs to that length. Prints one
Markdown table row per run: claim calls per second, jobs per second, and duplicates (must be 0).

PostgreSQL runs as a throwaway server in its default durable configuration (fsync on), started by
tests/pg_server.py as the `postgres` user; SQLite is a WAL file in a temp dir with the store's settings.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))

from pg_server import PgServer, find_bin_dir  # noqa: E402

from edalle.jobs import SqliteJobStore, WorkerCaps  # noqa: E402
from edalle.jobs.postgres import PostgresJobStore  # noqa: E402

USERS = 200
FILL = """
    INSERT INTO jobs (kind, user_id, guild_id, channel_id, compat_key, payload, available_at, created_at)
    SELECT 'imagine', i % {users}, 10, 20, 'imagine:tiny:9', '{{"n": 9, "preset": "tiny", "prompt": "x"}}', 0, 0
    FROM {series}
"""


async def fill_postgres(url: str, queued: int) -> None:
    await (await PostgresJobStore.open(url)).close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(FILL.format(users=USERS, series=f'generate_series(1, {queued}) AS i'))
        await conn.execute('ANALYZE jobs')
    finally:
        await conn.close()


async def fill_sqlite(path: Path, queued: int) -> None:
    store = await SqliteJobStore.open(path)
    try:
        series = f'(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {queued}) SELECT i FROM s)'
        await store._write(lambda conn: conn.execute(FILL.format(users=USERS, series=series)))
        await store._conn.execute('ANALYZE')
    finally:
        await store.close()


async def race(open_store, claimers: int, batch: int, take: int) -> tuple[int, int, float, int]:
    """Claimers take batches and complete them until `take` jobs are gone; returns (calls, jobs, seconds, dups)."""
    stores = [await open_store() for _ in range(claimers)]
    caps = WorkerCaps(('imagine:',), max_batch=batch)
    taken: list[int] = []
    calls = 0

    async def work(store, name: str) -> None:
        nonlocal calls
        while len(taken) < take:
            jobs = await store.claim(name, caps, 600.0)
            calls += 1
            if not jobs:
                return
            taken.extend(job.id for job in jobs)
            for job in jobs:
                await store.complete(job.lease, {}, 0.0)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(work(store, f'w{i}') for i, store in enumerate(stores)))
        seconds = time.perf_counter() - started
    finally:
        for store in stores:
            await store.close()
    return calls, len(taken), seconds, len(taken) - len(set(taken))


def row(store: str, queued: int, claimers: int, batch: int, result: tuple[int, int, float, int]) -> str:
    calls, jobs, seconds, dups = result
    return f'| {store} | {queued:,} | {claimers} × batch {batch} | {calls / seconds:,.0f} | {jobs / seconds:,.0f} | {dups} |'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--queued', type=int, nargs='+', default=[2_000, 20_000])
    parser.add_argument('--store', choices=('sqlite', 'postgres', 'both'), default='both')
    parser.add_argument('--claimers', type=int, default=8)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--take', type=int, default=400, help='jobs taken per run (default 400)')
    args = parser.parse_args()

    print(f'# {platform.node()} · {platform.processor() or platform.machine()} · Python {platform.python_version()}')
    print('| store | queued | claimers | claims/s | jobs/s | duplicates |')
    print('|---|---|---|---|---|---|')
    server = None
    if args.store in ('postgres', 'both'):
        bin_dir = find_bin_dir()
        if bin_dir is None:
            print('PostgreSQL is not installed; skipping it', file=sys.stderr)
        else:
            server = PgServer(bin_dir, fast=False).start()
    try:
        for queued in args.queued:
            if args.store in ('sqlite', 'both'):
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / 'bench.db'
                    asyncio.run(fill_sqlite(path, queued))
                    result = asyncio.run(race(lambda p=path: SqliteJobStore.open(p), args.claimers, args.batch, args.take))
                print(row('SQLite', queued, args.claimers, args.batch, result), flush=True)
            if server is not None:
                url = server.create_database('bench')
                asyncio.run(fill_postgres(url, queued))
                result = asyncio.run(
                    race(lambda u=url: PostgresJobStore.open(u, pool_size=2), args.claimers, args.batch, args.take)
                )
                print(row('PostgreSQL', queued, args.claimers, args.batch, result), flush=True)
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
