"""The queue's state machine on a real SQLite file: fair claims, batches, leases and fencing, poison
jobs, cancel, position/ETA, deliver-once, idempotent enqueue, wake-ups."""

from __future__ import annotations

import asyncio

import pytest

from edalle import errors
from edalle.jobs import Ack, JobRequest, JobStatus, Progress, SqliteJobStore, WorkerCaps
from edalle.jobs.clock import ManualClock

CAPS = WorkerCaps(compat_prefixes=('imagine:tiny:', 'expand:tiny'), max_batch=1)
LEASE = 30.0


def run(body, tmp_path, **store_kwargs):
    """Open a store on a fresh file with a manual clock and relaxed limits, run `body(store, clock)`."""

    async def main():
        clock = ManualClock()
        store = await SqliteJobStore.open(tmp_path / 'edalle.db', clock=clock, **store_kwargs)
        try:
            for key, value in {'cooldown_seconds': 0, 'pending_per_user': 1000, 'daily_imagines': 1000}.items():
                await store.set_limit(0, key, value, actor_id=None)
            return await body(store, clock)
        finally:
            await store.close()

    return asyncio.run(main())


def imagine(user_id, prompt='a cat', n=9, **kwargs):
    return JobRequest.imagine(user_id=user_id, guild_id=10, channel_id=20, prompt=prompt, n=n, preset='tiny', **kwargs)


async def finish(store, job, seconds=1.0):
    assert await store.complete(job.lease, {'candidates': [{'index': 0, 'path': 'x.png'}]}, seconds) is JobStatus.SUCCEEDED


def test_round_robin_across_users_then_priority_then_age(tmp_path):
    async def body(store, clock):
        for _ in range(100):
            await store.enqueue(imagine(user_id=1))
        for _ in range(3):
            await store.enqueue(imagine(user_id=2))
        for _ in range(2):
            await store.enqueue(imagine(user_id=3))
        batch = await store.claim('w', WorkerCaps(('imagine:tiny:',), max_batch=4), LEASE)
        return [job.user_id for job in sorted(batch, key=lambda j: j.id)]

    # user 1's first job, then 2 and 3 get a turn before user 1's second (SCALE_OUT §7.5: {A, A, B, C})
    assert sorted(run(body, tmp_path)) == [1, 1, 2, 3]


def test_another_users_job_starts_within_one_slot_of_a_long_queue(tmp_path):
    async def body(store, clock):
        for _ in range(50):
            await store.enqueue(imagine(user_id=1))
        first = (await store.claim('w', CAPS, LEASE))[0]
        admission = await store.enqueue(imagine(user_id=2))
        assert admission.position == 0  # next, although 49 of user 1's jobs were queued before it
        await finish(store, first)
        second = (await store.claim('w', CAPS, LEASE))[0]
        return second.user_id

    assert run(body, tmp_path) == 2


def test_higher_priority_goes_first_within_a_round(tmp_path):
    async def body(store, clock):
        await store.enqueue(imagine(user_id=1))
        await store.enqueue(imagine(user_id=2, priority=5))
        return (await store.claim('w', CAPS, LEASE))[0].user_id

    assert run(body, tmp_path) == 2


def test_a_batch_never_mixes_compat_keys_and_respects_the_worker_caps(tmp_path):
    async def body(store, clock):
        for user in range(6):
            await store.enqueue(imagine(user_id=user, n=4 if user % 2 else 9))
        await store.enqueue(JobRequest('other', 99, 10, 20, {}, 'other:thing'))
        caps = WorkerCaps(('imagine:tiny:',), max_batch=8)
        first = await store.claim('w', caps, LEASE)
        second = await store.claim('w', caps, LEASE)
        third = await store.claim('w', caps, LEASE)
        return first, second, third

    first, second, third = run(body, tmp_path)
    assert {j.compat_key for j in first} == {'imagine:tiny:9'} and len(first) == 3
    assert {j.compat_key for j in second} == {'imagine:tiny:4'} and len(second) == 3
    assert third == []  # the 'other' job is not this worker's kind


def test_expand_jobs_are_claimed_one_at_a_time(tmp_path):
    async def body(store, clock):
        parent = (await store.enqueue(imagine(user_id=1))).job
        await store.claim('w', CAPS, LEASE)
        await finish(store, await store.get(parent.id))
        for user in (2, 3):
            req = JobRequest.expand(
                user_id=user, guild_id=10, channel_id=20, parent_job_id=parent.id, parent_index=0, preset='tiny'
            )
            await store.enqueue(req)
        return await store.claim('w', WorkerCaps(('expand:tiny',), max_batch=4), LEASE)

    assert len(run(body, tmp_path)) == 1


def test_an_expired_lease_is_reclaimed_with_the_next_attempt_and_the_old_worker_is_fenced_off(tmp_path):
    async def body(store, clock):
        await store.enqueue(imagine(user_id=1))
        old = (await store.claim('old', CAPS, LEASE))[0]
        clock.advance(LEASE + 1)
        new = (await store.claim('new', CAPS, LEASE))[0]
        assert new.id == old.id and (old.attempt, new.attempt) == (1, 2)
        assert await store.renew([old.lease], LEASE) == [Ack(False)]
        assert await store.progress(old.lease, Progress('generating', 1, 2), LEASE) == Ack(False)
        assert await store.complete(old.lease, {'stale': True}, 1.0) is None
        assert await store.fail(old.lease, 'stale', retryable=False) is None
        assert await store.release(old.lease) is False
        assert await store.progress(new.lease, Progress('generating', 1, 2), LEASE) == Ack(True)
        await finish(store, new)
        return await store.get(old.id)

    job = run(body, tmp_path)
    assert job.status is JobStatus.SUCCEEDED and job.result == {'candidates': [{'index': 0, 'path': 'x.png'}]}


def test_renewing_keeps_a_long_job_alive(tmp_path):
    async def body(store, clock):
        await store.enqueue(imagine(user_id=1))
        job = (await store.claim('w', CAPS, LEASE))[0]
        for _ in range(10):
            clock.advance(LEASE / 2)
            assert await store.renew([job.lease], LEASE) == [Ack(True)]
            assert await store.claim('thief', CAPS, LEASE) == []
        return job

    run(body, tmp_path)


def test_a_job_that_kills_its_worker_every_time_ends_failed_with_a_reason(tmp_path):
    async def body(store, clock):
        job_id = (await store.enqueue(imagine(user_id=1))).job.id
        attempts = []
        for _ in range(5):
            claimed = await store.claim('w', CAPS, LEASE)
            if not claimed:
                break
            attempts.append(claimed[0].attempt)
            clock.advance(LEASE + 1)  # the worker died: no renewals
        await store.sweep()
        return attempts, await store.get(job_id)

    attempts, job = run(body, tmp_path)
    assert attempts == [1, 2, 3]
    assert job.status is JobStatus.FAILED and 'stopped its worker 3 times' in job.error


def test_retryable_errors_requeue_until_attempts_run_out(tmp_path):
    async def body(store, clock):
        job_id = (await store.enqueue(imagine(user_id=1))).job.id
        statuses = []
        for _ in range(3):
            job = (await store.claim('w', CAPS, LEASE))[0]
            statuses.append(await store.fail(job.lease, 'The GPU ran out of memory.', retryable=True, retry_after=5))
            assert await store.claim('w', CAPS, LEASE) == []  # backing off
            clock.advance(5)
        return statuses, await store.get(job_id)

    statuses, job = run(body, tmp_path)
    assert statuses == [JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.FAILED]
    assert job.error == 'The GPU ran out of memory.'


def test_a_handed_back_job_does_not_use_an_attempt(tmp_path):
    async def body(store, clock):
        job_id = (await store.enqueue(imagine(user_id=1))).job.id
        for _ in range(5):
            job = (await store.claim('w', CAPS, LEASE))[0]
            assert await store.release(job.lease)
        job = (await store.claim('w', CAPS, LEASE))[0]
        assert job.attempts_used == 1
        clock.advance(LEASE + 1)
        await store.sweep()
        return await store.get(job_id)

    job = run(body, tmp_path)
    assert job.status is JobStatus.QUEUED and job.attempt == 6 and job.handbacks == 5


def test_cancel_queued_at_once_and_running_at_the_next_check(tmp_path):
    async def body(store, clock):
        queued = (await store.enqueue(imagine(user_id=1))).job
        running = (await store.enqueue(imagine(user_id=2))).job
        claimed = (await store.claim('w', CAPS, LEASE))[0]
        assert claimed.id == queued.id  # claim the first; cancel the *other* while queued
        assert (await store.cancel(running.id, by_user_id=2)).status is JobStatus.CANCELLED
        with pytest.raises(errors.NotJobOwner):
            await store.cancel(claimed.id, by_user_id=2)
        job = await store.cancel(claimed.id, by_user_id=1)
        assert job.status is JobStatus.RUNNING and job.cancel_requested
        assert await store.renew([claimed.lease], LEASE) == [Ack(True, cancel_requested=True)]
        assert await store.finish_cancelled(claimed.lease)
        assert (await store.cancel(claimed.id)).status is JobStatus.CANCELLED  # twice is harmless
        done = (await store.enqueue(imagine(user_id=3))).job
        await finish(store, (await store.claim('w', CAPS, LEASE))[0])
        with pytest.raises(errors.JobAlreadyFinished):
            await store.cancel(done.id)
        with pytest.raises(errors.JobNotFound):
            await store.cancel(12345)
        return await store.get(claimed.id)

    assert run(body, tmp_path).status is JobStatus.CANCELLED


def test_a_cancel_that_races_completion_wins_and_an_orphaned_cancelled_job_is_not_retried(tmp_path):
    async def body(store, clock):
        a = (await store.enqueue(imagine(user_id=1))).job
        b = (await store.enqueue(imagine(user_id=2))).job
        ja, jb = await store.claim('w', WorkerCaps(('imagine:tiny:',), max_batch=2), LEASE)
        await store.cancel(a.id)
        await store.cancel(b.id)
        assert await store.complete(ja.lease, {'x': 1}, 1.0) is JobStatus.CANCELLED
        clock.advance(LEASE + 1)  # b's worker died after the cancel
        report = await store.sweep()
        return report, await store.get(a.id), await store.get(b.id)

    report, a, b = run(body, tmp_path)
    assert a.status is JobStatus.CANCELLED and a.result is None
    assert b.status is JobStatus.CANCELLED and report.cancelled == [b.id]


def test_progress_is_recorded_for_the_bot(tmp_path):
    async def body(store, clock):
        await store.enqueue(imagine(user_id=1))
        job = (await store.claim('w', CAPS, LEASE))[0]
        await store.progress(job.lease, Progress('generating', 3, 8, 'images/1/preview-a1.png'), LEASE)
        await store.progress(job.lease, Progress('ranking', 1, 1), LEASE)  # keeps the last preview
        return await store.get(job.id)

    job = run(body, tmp_path)
    assert (job.stage, job.step, job.total, job.preview_path) == ('ranking', 1, 1, 'images/1/preview-a1.png')


def test_position_and_eta_follow_the_claim_order(tmp_path):
    async def body(store, clock):
        await store.register_worker('w', {'preset': 'tiny'})
        first = (await store.enqueue(imagine(user_id=1))).job
        await store.claim('w', CAPS, LEASE)
        clock.advance(4)
        await finish(store, await store.get(first.id), seconds=4.0)  # history: 4 s per job
        ids = [(await store.enqueue(imagine(user_id=user))).job.id for user in (1, 1, 1, 2)]
        positions = [await store.position(job_id) for job_id in ids]
        claimed = []
        while batch := await store.claim('w', CAPS, LEASE):
            claimed.append(batch[0].id)
            await finish(store, batch[0])
        return ids, positions, claimed

    ids, positions, claimed = run(body, tmp_path)
    # user 1 was just served, so user 2's first job goes before user 1's next
    assert [p.ahead for p in positions] == [1, 2, 3, 0]
    assert [p.eta_seconds for p in positions] == [4.0, 8.0, 12.0, 0.0] and positions[0].workers_online == 1
    assert claimed == sorted(ids, key=lambda i: [p.ahead for p in positions][ids.index(i)])


def test_no_eta_without_a_worker_online(tmp_path):
    async def body(store, clock):
        return await store.position((await store.enqueue(imagine(user_id=1))).job.id)

    assert run(body, tmp_path).eta_seconds is None


def test_the_same_request_key_returns_the_first_job(tmp_path):
    async def body(store, clock):
        a = await store.enqueue(imagine(user_id=1, request_key='msg:42'))
        b = await store.enqueue(imagine(user_id=1, request_key='msg:42'))
        return a, b

    a, b = run(body, tmp_path)
    assert a.created and not b.created and a.job.id == b.job.id and b.quota.imagines_used == 1


def test_two_racing_posters_deliver_each_result_once(tmp_path):
    async def body(store, clock):
        for user in range(5):
            await store.enqueue(imagine(user_id=user))
        while batch := await store.claim('w', WorkerCaps(('imagine:tiny:',), max_batch=2), LEASE):
            for job in batch:
                await finish(store, job)
        bot_a = await store.claim_deliveries('bot-a', limit=3, lease_seconds=60)
        bot_b = await store.claim_deliveries('bot-b', limit=10, lease_seconds=60)
        assert {d.job.id for d in bot_a}.isdisjoint({d.job.id for d in bot_b}) and len(bot_a) + len(bot_b) == 5
        # bot-a crashes before marking its first; after its lease expires bot-b takes that one over
        for d in bot_a[1:] + bot_b:
            assert await store.mark_delivered(d, message_id=1000 + d.job.id)
        clock.advance(61)
        retaken = await store.claim_deliveries('bot-b', limit=10, lease_seconds=60)
        assert [d.job.id for d in retaken] == [bot_a[0].job.id]
        assert retaken[0].job.delivery_nonce == bot_a[0].job.delivery_nonce  # Discord returns the first post
        assert not await store.mark_delivered(bot_a[0], message_id=1)  # the stale poster is fenced off
        assert await store.mark_delivered(retaken[0], message_id=2)
        return await store.undelivered(), await store.claim_deliveries('bot-c', limit=10, lease_seconds=60)

    assert run(body, tmp_path) == ([], [])


def test_wait_for_change_wakes_on_another_connections_commit(tmp_path):
    async def main():
        bot = await SqliteJobStore.open(tmp_path / 'edalle.db')
        worker = await SqliteJobStore.open(tmp_path / 'edalle.db')
        try:
            assert await bot.wait_for_change(0) is False  # records the starting point
            assert await bot.wait_for_change(0.1) is False
            waiter = asyncio.create_task(bot.wait_for_change(5))
            await asyncio.sleep(0.1)
            await worker.register_worker('w', {})
            return await asyncio.wait_for(waiter, 2)
        finally:
            await bot.close()
            await worker.close()

    assert asyncio.run(main()) is True


def test_concurrent_claimers_on_separate_connections_never_share_a_job(tmp_path):
    async def main():
        path = tmp_path / 'edalle.db'
        setup = await SqliteJobStore.open(path)
        for key, value in {
            'cooldown_seconds': 0,
            'pending_per_user': 1000,
            'daily_imagines': 10_000,
            'queue_cap': 1000,
        }.items():
            await setup.set_limit(0, key, value, actor_id=None)
        for i in range(300):
            await setup.enqueue(imagine(user_id=i % 7))
        stores = [await SqliteJobStore.open(path) for _ in range(6)]

        async def drain(store, name):
            got = []
            while batch := await store.claim(name, WorkerCaps(('imagine:tiny:',), max_batch=3), LEASE):
                got += [job.id for job in batch]
                for job in batch:
                    await store.complete(job.lease, {}, 0.0)
            return got

        try:
            results = await asyncio.gather(*(drain(s, f'w{i}') for i, s in enumerate(stores)))
        finally:
            for store in [setup, *stores]:
                await store.close()
        return results

    results = asyncio.run(main())
    claimed = [job_id for got in results for job_id in got]
    assert len(claimed) == len(set(claimed)) == 300


def test_the_sqlite_store_implements_every_verb_of_the_interface_with_the_same_signature():
    import inspect

    from edalle.jobs import JobStore

    verbs = [name for name, value in vars(JobStore).items() if inspect.iscoroutinefunction(value)]
    assert len(verbs) > 30
    for name in verbs:
        ours = inspect.signature(getattr(SqliteJobStore, name))
        assert ours == inspect.signature(getattr(JobStore, name)), name
