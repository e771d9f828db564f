"""The SQLite store survives callers that are cancelled mid-transaction.

A bot or worker task can be cancelled at any await (a shutdown, a `wait_for` timing out). With one
aiosqlite round trip per statement, a cancel that landed while `BEGIN` was in flight on the aiosqlite
thread left the shared connection inside a transaction, and every later verb failed with `cannot start
a transaction within a transaction` (bench/RESULTS.md, bot-load run 2: the worker died in `complete`).
This test cancels verbs at random points, many times, then checks that no transaction is left open and
that the store still works end to end.
"""

from __future__ import annotations

import asyncio
import random

from edalle.jobs import JobRequest, JobStatus, SqliteJobStore, WorkerCaps
from edalle.operations import imagine as imagine_op

CAPS = WorkerCaps(compat_prefixes=('imagine:tiny:',), max_batch=4)
LEASE = 30.0


def imagine(user_id: int, key: str | None = None) -> JobRequest:
    return imagine_op.request(
        user_id=user_id, guild_id=10, channel_id=20, prompt='a cat', n=2, preset='tiny', request_key=key
    )


async def _cancel_soon(coro: object, rng: random.Random) -> None:
    """Run `coro` as a task and cancel it after a random number of loop turns (0: before it starts)."""
    task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
    for _ in range(rng.randrange(0, 12)):
        await asyncio.sleep(0)
    if rng.random() < 0.5:
        await asyncio.sleep(rng.random() * 0.002)  # also land while a statement runs on the aiosqlite thread
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass


def test_cancelled_verbs_leave_no_transaction_open(tmp_path):
    async def main() -> None:
        store = await SqliteJobStore.open(tmp_path / 'edalle.db')
        try:
            for key, value in {'cooldown_seconds': 0, 'pending_per_user': 1000, 'daily_imagines': 1000}.items():
                await store.set_limit(0, key, value, actor_id=None)
            await store.register_worker('w', {})
            rng = random.Random(1234)
            for round_ in range(150):
                jobs = await store.claim('w', CAPS, LEASE)
                verbs = [
                    store.enqueue(imagine(round_ % 7 + 1, f'k{round_}')),
                    store.get_settings(10),
                    store.get_limits(10, 1),
                    store.queue_snapshot(),
                    store.claim('w', CAPS, LEASE),
                    *(store.complete(job.lease, {'candidates': []}, 1.0) for job in jobs if job.lease),
                ]
                await asyncio.gather(*(_cancel_soon(verb, rng) for verb in verbs))
                # A cancelled verb's statements may still be queued on the aiosqlite thread: the next verb runs
                # after them, and must find the connection outside any transaction.
                assert await store.get_settings(10) is not None, f'round {round_}'
                assert not store._conn.in_transaction, f'round {round_}: a cancelled verb left a transaction open'
            # Still a working store: a job goes through enqueue → claim → complete.
            admission = await store.enqueue(imagine(99, 'final'))
            claimed = []
            for _ in range(100):
                claimed = [job for job in await store.claim('w', CAPS, LEASE) if job.id == admission.job.id]
                if claimed:
                    break
            assert claimed and claimed[0].lease is not None
            assert await store.complete(claimed[0].lease, {'candidates': []}, 1.0) is JobStatus.SUCCEEDED
            assert not store._conn.in_transaction
        finally:
            await store.close()

    asyncio.run(main())
