"""What only a real PostgreSQL can show: concurrent claimers, concurrent admissions, real-time leases on
the server's clock, concurrent migrations. Each claimer is a store of its own (its own connections),
as separate worker hosts would be.

The headline test: 8 claimers taking batches of 3 from 1,000 jobs, repeated, with
zero duplicates and zero lost. A control run of the same test with the eligibility check removed from
the FOR UPDATE level shows the test does catch that bug.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import asyncpg
import pytest
from pg_server import pg_server, pg_url  # noqa: F401  (fixtures)

from edalle import errors
from edalle.db import Migration
from edalle.jobs import JobStatus, WorkerCaps
from edalle.jobs.postgres import MIGRATIONS_DIR, PostgresJobStore, load_migrations
from edalle.operations import imagine as imagine_op

JOBS = 1_000
CLAIMERS = 8
BATCH = 3
RUNS = 4
USERS = 50
CAPS = WorkerCaps(('imagine:tiny:',), max_batch=BATCH)


async def fill(url: str, jobs: int = JOBS, users: int = USERS) -> None:
    """Queue `jobs` imagine jobs over `users` users in one statement (enqueue's own admission and position
    work, 1,000 times over, would only slow the setup; the claim is what is under test)."""
    await (await PostgresJobStore.open(url)).close()  # migrate
    conn = await asyncpg.connect(url)
    try:
        query = """
            INSERT INTO jobs (kind, user_id, guild_id, channel_id, compat_key, payload, available_at, created_at)
            SELECT 'imagine', i % $2, 10, 20, 'imagine:tiny:9', '{"n": 9, "preset": "tiny", "prompt": "x"}',
                   extract(epoch FROM now()), extract(epoch FROM now())
            FROM generate_series(1, $1) AS i
        """
        await conn.execute(query, jobs, users)
    finally:
        await conn.close()


async def race(url: str, store_class: type[PostgresJobStore] = PostgresJobStore) -> tuple[list[int], dict[str, int]]:
    """CLAIMERS stores drain the queue concurrently, completing what they claim; returns every claimed id
    and the final status counts."""
    stores = [await store_class.open(url, pool_size=2) for _ in range(CLAIMERS)]

    async def drain(store: PostgresJobStore, name: str) -> list[int]:
        got: list[int] = []
        while batch := await store.claim(name, CAPS, 60.0):
            assert len(batch) <= BATCH
            got += [job.id for job in batch]
            for job in batch:
                await store.complete(job.lease, {'by': name}, 0.0)
        return got

    try:
        results = await asyncio.gather(*(drain(store, f'w{i}') for i, store in enumerate(stores)))
        async with stores[0]._pool.acquire() as conn:
            rows = await conn.fetch('SELECT status, count(*) AS n FROM jobs GROUP BY status')
    finally:
        for store in stores:
            await store.close()
    return [job_id for got in results for job_id in got], {row['status']: row['n'] for row in rows}


def test_eight_claimers_batches_of_three_1000_jobs_no_duplicates_none_lost(pg_server):  # noqa: F811
    report = []
    for _ in range(RUNS):
        url = pg_server.create_database('claims')
        asyncio.run(fill(url))
        started = time.monotonic()
        claimed, statuses = asyncio.run(race(url))
        duplicates = len(claimed) - len(set(claimed))
        lost = JOBS - len(set(claimed))
        report.append((duplicates, lost, round(JOBS / (time.monotonic() - started))))
        assert statuses == {'succeeded': JOBS}, statuses
    print(f'\n{RUNS} runs of {CLAIMERS} claimers x batch {BATCH} x {JOBS} jobs: (duplicates, lost, jobs/s) = {report}')
    assert [(d, lost) for d, lost, _ in report] == [(0, 0)] * RUNS


class ClaimWithoutTheLockLevelCheck(PostgresJobStore):
    """The bug `edalle/jobs/postgres.py` guards against: eligibility tested only inside the ranking CTE (an old snapshot)."""

    def _claim_query(self, caps):
        query, params = super()._claim_query(caps)
        guard = "WHERE j.status = 'queued' AND j.available_at <= :now"
        assert guard in query
        return query.replace(guard, 'WHERE true'), params


def test_control_without_the_lock_level_check_the_same_race_does_take_jobs_twice(pg_server):  # noqa: F811
    """Shows the test above can fail: the same race with the bug re-introduced finds duplicates."""
    duplicates = []
    for _ in range(3):
        url = pg_server.create_database('buggy')
        asyncio.run(fill(url, jobs=300))
        claimed, _ = asyncio.run(race(url, ClaimWithoutTheLockLevelCheck))
        duplicates.append(len(claimed) - len(set(claimed)))
        if duplicates[-1]:
            break
    print(f'\nwithout the FOR UPDATE-level check: duplicates per run = {duplicates}')
    assert any(duplicates)


def test_an_expired_lease_on_the_servers_clock_is_redelivered_and_the_stale_worker_refused(pg_url):  # noqa: F811
    async def main():
        old_host = await PostgresJobStore.open(pg_url)
        new_host = await PostgresJobStore.open(pg_url)
        try:
            assert abs(old_host._db_clock.offset) < 1.0  # same machine: the measured offset is tiny
            await old_host.set_limit(0, 'cooldown_seconds', 0, actor_id=None)
            request = imagine_op.request(user_id=1, guild_id=10, channel_id=20, prompt='x', preset='tiny')
            job_id = (await old_host.enqueue(request)).job.id
            [old] = await old_host.claim('old', CAPS, 0.3)
            assert await new_host.claim('new', CAPS, 0.3) == []  # still leased
            await asyncio.sleep(0.5)  # the old worker stalls past its lease
            [new] = await new_host.claim('new', CAPS, 30.0)
            assert (new.id, old.attempt, new.attempt) == (job_id, 1, 2)
            assert await old_host.complete(old.lease, {'stale': True}, 1.0) is None
            assert (await old_host.renew([old.lease], 30.0))[0].ok is False
            assert await new_host.complete(new.lease, {'fresh': True}, 1.0) is JobStatus.SUCCEEDED
            return await new_host.get(job_id)
        finally:
            await old_host.close()
            await new_host.close()

    job = asyncio.run(main())
    assert job.result == {'fresh': True} and job.attempt == 2


def test_concurrent_enqueues_for_one_user_cannot_both_take_the_last_slot(pg_url):  # noqa: F811
    async def main():
        bots = [await PostgresJobStore.open(pg_url) for _ in range(4)]
        try:
            for key, value in {'cooldown_seconds': 0, 'pending_per_user': 1, 'daily_imagines': 100}.items():
                await bots[0].set_limit(0, key, value, actor_id=None)

            async def attempt(bot, i):
                request = imagine_op.request(user_id=7, guild_id=10, channel_id=20, prompt=f'p{i}', preset='tiny')
                try:
                    return (await bot.enqueue(request)).job.id
                except errors.TooManyPending:
                    return None

            outcomes = await asyncio.gather(*(attempt(bots[i % 4], i) for i in range(12)))
            return outcomes, await bots[0].user_jobs(7, active_only=False)
        finally:
            for bot in bots:
                await bot.close()

    outcomes, jobs = asyncio.run(main())
    assert sum(o is not None for o in outcomes) == 1 and len(jobs) == 1


def test_concurrent_start_up_migrates_once_and_a_newer_schema_is_refused(pg_url):  # noqa: F811
    async def main():
        stores = await asyncio.gather(*(PostgresJobStore.open(pg_url) for _ in range(4)))
        for store in stores:
            await store.close()
        conn = await asyncpg.connect(pg_url)
        try:
            versions = Counter(row['version'] for row in await conn.fetch('SELECT version FROM schema_migrations'))
        finally:
            await conn.close()
        known = load_migrations(MIGRATIONS_DIR)
        newer = [*known, Migration(len(known) + 1, 'future', 'CREATE TABLE future_thing (id int)')]
        store = await PostgresJobStore.open(pg_url, migrations=newer)
        await store.close()
        with pytest.raises(errors.SchemaTooNew):
            await PostgresJobStore.open(pg_url)
        with pytest.raises(errors.SchemaTooNew):
            await PostgresJobStore.open(pg_url, migrate=False)
        return versions, len(known)

    versions, known = asyncio.run(main())
    assert versions == Counter(range(1, known + 1))
