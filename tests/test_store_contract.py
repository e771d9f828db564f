"""One contract for both job stores: every test runs on SQLite (a file) and on PostgreSQL (a real server
started by `pg_server`, never a fake). Fair claims, batches by compat key, leases with fencing, poison
jobs, cancellation, progress, position/ETA, admission limits in the enqueue transaction, idempotent
enqueue, deliver-once, wake-ups, and several claimers on separate connections.

The stores' own files (`test_jobs_*.py`, `test_postgres_*.py`) test what only one of them has.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from odd_input import (
    BLOOD_ALLOWED,
    BLOOD_EVASIONS,
    IDS_IN_RANGE,
    IDS_OUT_OF_RANGE,
    NO_SUCH_JOB_IDS,
    SETTING_VALUES_REFUSED,
)
from pg_server import shared_server

from edalle import errors
from edalle.jobs import Ack, JobRequest, JobStatus, JobStore, Progress, SqliteJobStore, WorkerCaps
from edalle.jobs.clock import ManualClock
from edalle.jobs.postgres import PostgresJobStore
from edalle.operations import expand as expand_op
from edalle.operations import imagine as imagine_op

CAPS = WorkerCaps(compat_prefixes=('imagine:tiny:', 'expand:tiny'), max_batch=1)
LEASE = 30.0
RELAXED = {'cooldown_seconds': 0, 'pending_per_user': 1000, 'daily_imagines': 1000}


@dataclass
class Backend:
    """Where a test's database lives; `open()` gives another store (another connection) on it."""

    name: str
    where: str | Path

    async def open(self, **kwargs: Any) -> Any:
        if self.name == 'sqlite':
            return await SqliteJobStore.open(self.where, **kwargs)
        return await PostgresJobStore.open(str(self.where), **kwargs)


@pytest.fixture(params=['sqlite', 'postgres'])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == 'sqlite':
        return Backend('sqlite', tmp_path / 'edalle.db')
    return Backend('postgres', shared_server().create_database())


def run(body, backend: Backend, limits: dict[str, Any] | None = None, **store_kwargs):
    """Open a store with a manual clock and relaxed limits (unless `limits` says otherwise), run `body(store, clock)`."""

    async def main():
        clock = ManualClock()
        store = await backend.open(clock=clock, **store_kwargs)
        try:
            for key, value in (RELAXED if limits is None else limits).items():
                await store.set_limit(0, key, value, actor_id=None)
            return await body(store, clock)
        finally:
            await store.close()

    return asyncio.run(main())


def imagine(user_id, prompt='a cat', n=9, **kwargs):
    return imagine_op.request(user_id=user_id, guild_id=10, channel_id=20, prompt=prompt, n=n, preset='tiny', **kwargs)


async def finish(store, job, seconds=1.0):
    assert await store.complete(job.lease, {'candidates': [{'index': 0, 'path': 'x.png'}]}, seconds) is JobStatus.SUCCEEDED


# ---- the interface ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('store_class', [SqliteJobStore, PostgresJobStore])
def test_both_stores_implement_every_verb_with_the_interface_signature(store_class):
    verbs = [name for name, value in vars(JobStore).items() if inspect.iscoroutinefunction(value)]
    assert len(verbs) > 30
    for name in verbs:
        assert inspect.signature(getattr(store_class, name)) == inspect.signature(getattr(JobStore, name)), name


# ---- fair claims and batches -----------------------------------------------------------------------------


def test_round_robin_across_users(backend):
    async def body(store, clock):
        for user, count in ((1, 100), (2, 3), (3, 2)):
            for _ in range(count):
                await store.enqueue(imagine(user_id=user))
        batch = await store.claim('w', WorkerCaps(('imagine:tiny:',), max_batch=4), LEASE)
        return sorted(job.user_id for job in batch)

    assert run(body, backend) == [1, 1, 2, 3]  # one per user per rank: {A, A, B, C}, not A's first four


def test_another_users_job_starts_within_one_slot_of_a_long_queue(backend):
    async def body(store, clock):
        for _ in range(50):
            await store.enqueue(imagine(user_id=1))
        first = (await store.claim('w', CAPS, LEASE))[0]
        admission = await store.enqueue(imagine(user_id=2))
        assert admission.position == 0
        await finish(store, first)
        return (await store.claim('w', CAPS, LEASE))[0].user_id

    assert run(body, backend) == 2


def test_higher_priority_goes_first_within_a_round(backend):
    async def body(store, clock):
        await store.enqueue(imagine(user_id=1))
        await store.enqueue(imagine(user_id=2, priority=5))
        return (await store.claim('w', CAPS, LEASE))[0].user_id

    assert run(body, backend) == 2


async def enqueue_two_keys_and_another_kind(store) -> None:
    """Six users' imagine jobs, alternating 9 and 4 candidates (two compat keys), and one job of a kind no caps here take."""
    for user in range(6):
        await store.enqueue(imagine(user_id=user, n=4 if user % 2 else 9))
    await store.enqueue(JobRequest('other', 99, 10, 20, {}, 'other:thing'))


def test_a_batch_never_mixes_compat_keys_nor_exceeds_the_worker_caps(backend):
    async def body(store, clock):
        await enqueue_two_keys_and_another_kind(store)
        caps = WorkerCaps(('imagine:tiny:',), max_batch=2)
        batches = []
        while batch := await store.claim('w', caps, LEASE):
            batches.append(batch)
        return batches

    batches = run(body, backend)  # the 'other' job is not this worker's kind: never claimed
    assert all(1 <= len(b) <= 2 and len({job.compat_key for job in b}) == 1 for b in batches)
    assert sorted(job.compat_key for b in batches for job in b) == ['imagine:tiny:4'] * 3 + ['imagine:tiny:9'] * 3


def test_a_batch_takes_every_ready_job_of_its_key_up_to_the_cap(backend):
    async def body(store, clock):
        await enqueue_two_keys_and_another_kind(store)
        caps = WorkerCaps(('imagine:tiny:',), max_batch=8)
        return [await store.claim('w', caps, LEASE) for _ in range(3)]

    first, second, third = run(body, backend)
    assert {j.compat_key for j in first} == {'imagine:tiny:9'} and len(first) == 3
    assert {j.compat_key for j in second} == {'imagine:tiny:4'} and len(second) == 3
    assert third == []  # the 'other' job is not this worker's kind


def test_expand_jobs_are_claimed_one_at_a_time(backend):
    async def body(store, clock):
        parent = (await store.enqueue(imagine(user_id=1))).job
        await store.claim('w', CAPS, LEASE)
        await finish(store, await store.get(parent.id))
        for user in (2, 3):
            request = expand_op.request(
                user_id=user, guild_id=10, channel_id=20, parent_job_id=parent.id, parent_index=0, preset='tiny', admin=True
            )
            await store.enqueue(request)
        return await store.claim('w', WorkerCaps(('expand:tiny',), max_batch=4), LEASE)

    assert len(run(body, backend)) == 1


# ---- leases, fencing, retries ----------------------------------------------------------------------------


def test_an_expired_lease_is_reclaimed_with_attempt_plus_one_and_the_stale_worker_is_fenced_off(backend):
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
        assert await store.finish_cancelled(old.lease) is False
        assert await store.release(old.lease) is False
        assert await store.progress(new.lease, Progress('generating', 1, 2), LEASE) == Ack(True)
        await finish(store, new)
        return await store.get(old.id)

    job = run(body, backend)
    assert job.status is JobStatus.SUCCEEDED and job.result == {'candidates': [{'index': 0, 'path': 'x.png'}]}
    assert job.attempt == 2 and job.worker_id == 'new'


def test_renewing_keeps_a_long_job_alive(backend):
    async def body(store, clock):
        await store.enqueue(imagine(user_id=1))
        job = (await store.claim('w', CAPS, LEASE))[0]
        for _ in range(6):
            clock.advance(LEASE / 2)
            assert await store.renew([job.lease], LEASE) == [Ack(True)]
            assert await store.claim('thief', CAPS, LEASE) == []

    run(body, backend)


def test_a_poison_job_ends_failed_after_max_attempts(backend):
    async def body(store, clock):
        job_id = (await store.enqueue(imagine(user_id=1))).job.id
        attempts = []
        for _ in range(5):
            claimed = await store.claim('w', CAPS, LEASE)
            if not claimed:
                break
            attempts.append(claimed[0].attempt)
            clock.advance(LEASE + 1)  # the worker died: no renewals
        report = await store.sweep()
        return attempts, report, await store.get(job_id)

    attempts, report, job = run(body, backend)
    assert attempts == [1, 2, 3]
    assert job.status is JobStatus.FAILED and 'stopped its worker 3 times' in job.error
    assert job.id in report.failed or job.finished_at is not None


def test_retryable_errors_requeue_with_back_off_until_attempts_run_out(backend):
    async def body(store, clock):
        job_id = (await store.enqueue(imagine(user_id=1))).job.id
        statuses = []
        for _ in range(3):
            job = (await store.claim('w', CAPS, LEASE))[0]
            statuses.append(await store.fail(job.lease, 'The GPU ran out of memory.', retryable=True, retry_after=5))
            assert await store.claim('w', CAPS, LEASE) == []  # backing off
            clock.advance(5)
        return statuses, await store.get(job_id)

    statuses, job = run(body, backend)
    assert statuses == [JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.FAILED]
    assert job.error == 'The GPU ran out of memory.'


def test_a_handed_back_job_does_not_use_an_attempt(backend):
    async def body(store, clock):
        job_id = (await store.enqueue(imagine(user_id=1))).job.id
        for _ in range(5):
            assert await store.release((await store.claim('w', CAPS, LEASE))[0].lease)
        job = (await store.claim('w', CAPS, LEASE))[0]
        assert job.attempts_used == 1
        clock.advance(LEASE + 1)
        await store.sweep()
        return await store.get(job_id)

    job = run(body, backend)
    assert job.status is JobStatus.QUEUED and job.attempt == 6 and job.handbacks == 5


# ---- cancel and progress ---------------------------------------------------------------------------------


def test_cancel_queued_at_once_running_at_the_next_check_and_twice_harmlessly(backend):
    async def body(store, clock):
        first = (await store.enqueue(imagine(user_id=1))).job
        other = (await store.enqueue(imagine(user_id=2))).job
        claimed = (await store.claim('w', CAPS, LEASE))[0]
        assert claimed.id == first.id
        assert (await store.cancel(other.id, by_user_id=2)).status is JobStatus.CANCELLED
        with pytest.raises(errors.NotJobOwner):
            await store.cancel(claimed.id, by_user_id=2)
        job = await store.cancel(claimed.id, by_user_id=1)
        assert job.status is JobStatus.RUNNING and job.cancel_requested
        assert await store.renew([claimed.lease], LEASE) == [Ack(True, cancel_requested=True)]
        assert await store.progress(claimed.lease, Progress('generating', 2, 4), LEASE) == Ack(True, True)
        assert await store.finish_cancelled(claimed.lease)
        assert (await store.cancel(claimed.id)).status is JobStatus.CANCELLED
        done = (await store.enqueue(imagine(user_id=3))).job
        await finish(store, (await store.claim('w', CAPS, LEASE))[0])
        with pytest.raises(errors.JobAlreadyFinished):
            await store.cancel(done.id)
        with pytest.raises(errors.JobNotFound):
            await store.cancel(12345)
        return await store.get(claimed.id), await store.claim('w', CAPS, LEASE)

    job, left = run(body, backend)
    assert job.status is JobStatus.CANCELLED and left == []


def test_a_cancel_that_races_completion_wins_and_an_orphaned_cancelled_job_is_not_retried(backend):
    async def body(store, clock):
        a = (await store.enqueue(imagine(user_id=1))).job
        b = (await store.enqueue(imagine(user_id=2))).job
        ja, jb = await store.claim('w', WorkerCaps(('imagine:tiny:',), max_batch=2), LEASE)
        await store.cancel(a.id)
        await store.cancel(b.id)
        assert await store.complete(ja.lease, {'x': 1}, 1.0) is JobStatus.CANCELLED
        clock.advance(LEASE + 1)
        report = await store.sweep()
        return report, await store.get(a.id), await store.get(b.id)

    report, a, b = run(body, backend)
    assert a.status is JobStatus.CANCELLED and a.result is None
    assert b.status is JobStatus.CANCELLED and report.cancelled == [b.id]


def test_progress_is_recorded_for_the_bot(backend):
    async def body(store, clock):
        await store.enqueue(imagine(user_id=1))
        job = (await store.claim('w', CAPS, LEASE))[0]
        await store.progress(job.lease, Progress('generating', 3, 8, 'images/1/1/preview.png'), LEASE)
        await store.progress(job.lease, Progress('ranking', 1, 1), LEASE)  # keeps the last preview
        return await store.get(job.id)

    job = run(body, backend)
    assert (job.stage, job.step, job.total, job.preview_path) == ('ranking', 1, 1, 'images/1/1/preview.png')


# ---- position, ETA, admission ----------------------------------------------------------------------------


def test_position_and_eta_follow_the_claim_order(backend):
    async def body(store, clock):
        await store.register_worker('w', {'preset': 'tiny'})
        first = (await store.enqueue(imagine(user_id=1))).job
        await store.claim('w', CAPS, LEASE)
        clock.advance(4)
        await finish(store, await store.get(first.id), seconds=4.0)
        ids = [(await store.enqueue(imagine(user_id=user))).job.id for user in (1, 1, 1, 2)]
        positions = [await store.position(job_id) for job_id in ids]
        claimed = []
        while batch := await store.claim('w', CAPS, LEASE):
            claimed.append(batch[0].id)
            await finish(store, batch[0])
        return ids, positions, claimed

    ids, positions, claimed = run(body, backend)
    assert [p.ahead for p in positions] == [1, 2, 3, 0]
    assert [p.eta_seconds for p in positions] == [4.0, 8.0, 12.0, 0.0] and positions[0].workers_online == 1
    assert claimed == [ids[3], ids[0], ids[1], ids[2]]


def test_no_eta_without_a_worker_online(backend):
    async def body(store, clock):
        return await store.position((await store.enqueue(imagine(user_id=1))).job.id)

    assert run(body, backend).eta_seconds is None


def test_the_same_request_key_returns_the_first_job(backend):
    async def body(store, clock):
        return await store.enqueue(imagine(user_id=1, request_key='i:42')), await store.enqueue(
            imagine(user_id=1, request_key='i:42')
        )

    a, b = run(body, backend)
    assert a.created and not b.created and a.job.id == b.job.id and b.quota.imagines_used == 1


def test_admission_limits_are_checked_in_the_enqueue_transaction(backend):
    limits = {'cooldown_seconds': 10, 'pending_per_user': 2, 'daily_imagines': 3, 'queue_cap': 4}

    async def body(store, clock):
        await store.enqueue(imagine(user_id=1))
        with pytest.raises(errors.CooldownActive):
            await store.enqueue(imagine(user_id=1))
        clock.advance(10)
        await store.enqueue(imagine(user_id=1))
        clock.advance(10)
        with pytest.raises(errors.TooManyPending):
            await store.enqueue(imagine(user_id=1))
        await finish(store, (await store.claim('w', CAPS, LEASE))[0])
        await store.enqueue(imagine(user_id=1))
        clock.advance(10)
        await finish(store, (await store.claim('w', CAPS, LEASE))[0])
        with pytest.raises(errors.QuotaExceeded):  # 3 today: 2 succeeded + 1 queued
            await store.enqueue(imagine(user_id=1))
        for user in (2, 3, 4):
            await store.enqueue(imagine(user_id=user))
        with pytest.raises(errors.QueueFull):
            await store.enqueue(imagine(user_id=5))
        await store.ban(10, 6, actor_id=99, reason='spam')
        with pytest.raises(errors.Banned):
            await store.enqueue(imagine(user_id=6))
        await store.set_setting(10, 'blocked_words', ['dog'], actor_id=99)
        with pytest.raises(errors.PromptRejected):
            await store.enqueue(imagine(user_id=7, prompt='a DOG'))
        with pytest.raises(errors.RequestTooLarge):
            await store.enqueue(imagine(user_id=7, n=17))
        quota = await store.quota(10, 1)
        audit = await store.audit_log(10)
        return quota, [entry.action for entry in audit], await store.user_jobs(1, active_only=False)

    quota, actions, jobs = run(body, backend, limits=limits)
    assert (quota.imagines_used, quota.imagines_left) == (3, 0)
    assert actions == ['set_setting', 'ban']
    assert len(jobs) == 3  # nothing refused was written


def test_enqueue_fit_shapes_a_new_request_with_the_settings_it_read(backend):
    seen = []

    def fit(request, settings, limits):
        """What the bot does (`bot.admission.fit_imagine`): refuse by settings, cap candidates by limits."""
        seen.append((settings.blocked_words, limits.candidates_per_imagine))
        if 'dog' in request.payload['prompt']:
            raise errors.PromptRejected()
        return imagine(request.user_id, request.payload['prompt'], n=limits.candidates_per_imagine, request_key='k1')

    async def body(store, clock):
        await store.set_setting(10, 'blocked_words', ['cat'], actor_id=None)
        await store.set_limit(10, 'candidates_per_imagine', 4, actor_id=None)
        with pytest.raises(errors.PromptRejected):
            await store.enqueue(imagine(user_id=1, prompt='a dog', request_key='k0'), fit=fit)
        first = await store.enqueue(imagine(user_id=1, prompt='a bird', request_key='k1'), fit=fit)
        again = await store.enqueue(imagine(user_id=1, prompt='a bird', request_key='k1'), fit=fit)
        return first, again, await store.user_jobs(1, active_only=False)

    first, again, jobs = run(body, backend)
    assert seen == [(('cat',), 4)] * 2  # read in the enqueue transaction; not called for a request seen before
    assert first.created and first.job.payload['n'] == 4 and first.job.compat_key == 'imagine:tiny:4'
    assert not again.created and again.job.id == first.job.id and [job.id for job in jobs] == [first.job.id]


def test_a_disguised_blocked_word_is_refused_in_the_enqueue_transaction_and_charges_nothing(backend):
    async def body(store, clock):
        await store.set_setting(10, 'blocked_words', ['blood'], actor_id=None)
        for text in BLOOD_EVASIONS.values():
            with pytest.raises(errors.PromptRejected):
                await store.enqueue(imagine(user_id=1, prompt=text))
        refused_quota = await store.quota(10, 1)
        for text in BLOOD_ALLOWED.values():
            await store.enqueue(imagine(user_id=1, prompt=text))
        return refused_quota, await store.quota(10, 1)

    refused, allowed = run(body, backend)
    assert refused.imagines_used == 0 and allowed.imagines_used == len(BLOOD_ALLOWED)


def test_a_failed_job_gives_its_quota_back(backend):
    async def body(store, clock):
        await store.enqueue(imagine(user_id=1))
        job = (await store.claim('w', CAPS, LEASE))[0]
        await store.fail(job.lease, 'no', retryable=False)
        return await store.enqueue(imagine(user_id=1))

    assert run(body, backend, limits={'cooldown_seconds': 0, 'daily_imagines': 1}).quota.imagines_used == 1


def test_limits_layer_bot_wide_guild_and_user_overrides(backend):
    async def body(store, clock):
        await store.set_limit(0, 'pending_per_user', 5, actor_id=None)
        await store.set_limit(10, 'pending_per_user', 4, actor_id=1)
        await store.set_override(10, 7, 'pending_per_user', 9, actor_id=1)
        return (await store.get_limits(10)).pending_per_user, (await store.get_limits(10, 7)).pending_per_user

    assert run(body, backend) == (4, 9)


def test_limits_and_overrides_refuse_values_that_are_not_finite_numbers_in_range(backend):
    async def body(store, clock):
        for key, value in SETTING_VALUES_REFUSED:
            with pytest.raises(errors.InvalidSetting, match=' between '):
                await store.set_limit(10, key, value, actor_id=1)
            with pytest.raises(errors.InvalidSetting, match=' between '):  # a per-member override
                await store.set_override(10, 7, key, value, actor_id=1)
        await store.set_override(10, 7, 'cooldown_seconds', '-0', actor_id=1)
        return await store.get_limits(10, 7), await store.audit_log(10)

    limits, audit = run(body, backend)
    assert limits.cooldown_seconds == 0 and str(limits.cooldown_seconds) == '0.0'
    assert [entry.new_value for entry in audit] == [0.0]  # the refused values left no trace


# ---- ids a member sends ----------------------------------------------------------------------------------


def test_every_verb_taking_a_job_id_finds_nothing_for_ids_no_job_has(backend):
    """`.job 99999999999999999999`, `.cancel -1`, a button whose custom_id names job 2**63: "I can't find job
    #…" from both stores, never OverflowError (sqlite3) or DataError (asyncpg), and the store keeps working."""

    async def body(store, clock):
        real = (await store.enqueue(imagine(user_id=1))).job
        for job_id in NO_SUCH_JOB_IDS:
            for verb in (store.get, store.position, store.cancel, lambda i: store.cancel(i, by_user_id=1)):
                with pytest.raises(errors.JobNotFound) as refused:
                    await verb(job_id)
                assert str(refused.value) == f"I can't find job #{job_id}."
            assert await store.get_many([job_id, real.id, job_id]) == [await store.get(real.id)]
            await store.set_status_message(job_id, 5)  # as for any unknown job: nothing to remember it on
            expand = expand_op.request(
                user_id=1, guild_id=10, channel_id=20, parent_job_id=job_id, parent_index=0, preset='tiny'
            )
            with pytest.raises(errors.InvalidParent):  # 🔍 on a grid whose custom_id names no job
                await store.enqueue(expand)
            expand = expand_op.request(
                user_id=1, guild_id=10, channel_id=20, parent_job_id=real.id, parent_index=job_id, preset='tiny'
            )
            with pytest.raises(errors.InvalidParent):
                await store.enqueue(expand)
        return await store.get(real.id), await store.get_many(list(NO_SUCH_JOB_IDS))

    real, none = run(body, backend)
    assert real.status is JobStatus.QUEUED and real.status_message_id is None and none == []


def verbs_given_an_id(store, bad: int) -> dict[str, Any]:
    """Every store verb that takes a user, server, channel or message id, each called with `bad` in one place."""

    def request(**ids: int) -> JobRequest:
        return imagine_op.request(**{'user_id': 1, 'guild_id': 10, 'channel_id': 20, **ids}, prompt='a')

    return {
        'get_settings': lambda: store.get_settings(bad),
        'get_limits (server)': lambda: store.get_limits(bad, 1),
        'get_limits (user)': lambda: store.get_limits(10, bad),
        'set_setting': lambda: store.set_setting(bad, 'queue_cap', 5, actor_id=None),
        'set_setting (actor)': lambda: store.set_setting(10, 'queue_cap', 5, actor_id=bad),
        'set_limit': lambda: store.set_limit(bad, 'queue_cap', 5, actor_id=None),
        'set_override (user)': lambda: store.set_override(10, bad, 'queue_cap', 5, actor_id=None),
        'set_override (server)': lambda: store.set_override(bad, 1, 'queue_cap', 5, actor_id=None),
        'ban': lambda: store.ban(10, bad, actor_id=None),
        'ban (server)': lambda: store.ban(bad, 1, actor_id=None),
        'unban': lambda: store.unban(10, bad, actor_id=None),
        'get_ban': lambda: store.get_ban(10, bad),
        'audit_log': lambda: store.audit_log(bad),
        'quota': lambda: store.quota(10, bad),
        'user_jobs': lambda: store.user_jobs(bad),
        'enqueue (user)': lambda: store.enqueue(request(user_id=bad)),
        'enqueue (server)': lambda: store.enqueue(request(guild_id=bad)),
        'enqueue (channel)': lambda: store.enqueue(request(channel_id=bad)),
        'set_status_message': lambda: store.set_status_message(1, bad),
    }


def test_user_server_and_channel_ids_out_of_range_are_refused_in_words_and_in_range_ones_work(backend):
    async def body(store, clock):
        for user_id in IDS_IN_RANGE:  # no Discord user has these ids, but a column holds them: the verbs work
            await store.set_override(10, user_id, 'pending_per_user', 7, actor_id=user_id)
            assert (await store.get_limits(10, user_id)).pending_per_user == 7
            await store.ban(10, user_id, actor_id=user_id, reason='odd')
            assert (await store.get_ban(10, user_id)).user_id == user_id
            assert await store.unban(10, user_id, actor_id=user_id)
            assert (await store.quota(10, user_id)).imagines_used == 0
            assert await store.user_jobs(user_id, active_only=False) == []
            assert (await store.get_settings(user_id)).guild_id == user_id  # the same ids as server ids
            assert len(await store.audit_log(user_id)) == (len(RELAXED) if user_id == 0 else 0)
        refused = []
        for bad in IDS_OUT_OF_RANGE:
            for name, call in verbs_given_an_id(store, bad).items():
                with pytest.raises(errors.InvalidId) as caught:
                    await call()
                assert str(bad) in str(caught.value), name
                refused.append(name)
        # Row counts a member may type are clamped, not bound as they come.
        assert await store.user_jobs(1, limit=10**20) == [] and await store.audit_log(10, limit=-1) == []
        assert len(await store.audit_log(10, limit=2**63)) == 3 * len(IDS_IN_RANGE)  # override, ban, unban each
        return refused, await store.user_jobs(1, active_only=False)

    refused, jobs = run(body, backend)
    assert len(refused) == 19 * len(IDS_OUT_OF_RANGE) and jobs == []  # nothing was written by a refused call


# ---- delivery --------------------------------------------------------------------------------------------


def test_two_racing_posters_deliver_each_result_once(backend):
    async def body(store, clock):
        for user in range(5):
            await store.enqueue(imagine(user_id=user))
        while batch := await store.claim('w', WorkerCaps(('imagine:tiny:',), max_batch=2), LEASE):
            for job in batch:
                await finish(store, job)
        bot_a, bot_b = await asyncio.gather(
            store.claim_deliveries('bot-a', limit=3, lease_seconds=60),
            store.claim_deliveries('bot-b', limit=10, lease_seconds=60),
        )
        assert {d.job.id for d in bot_a}.isdisjoint({d.job.id for d in bot_b}) and len(bot_a) + len(bot_b) == 5
        crashed = bot_a[0] if bot_a else bot_b[0]  # this poster dies before recording its post
        for d in bot_a + bot_b:
            if d is not crashed:
                assert await store.mark_delivered(d, message_id=1000 + d.job.id)
        clock.advance(61)
        retaken = await store.claim_deliveries('bot-c', limit=10, lease_seconds=60)
        assert [d.job.id for d in retaken] == [crashed.job.id]
        assert retaken[0].job.delivery_nonce == crashed.job.delivery_nonce
        assert not await store.mark_delivered(crashed, message_id=1)
        assert await store.mark_delivered(retaken[0], message_id=2)
        return await store.undelivered(), await store.claim_deliveries('bot-d', limit=10, lease_seconds=60)

    assert run(body, backend) == ([], [])


# ---- several connections ---------------------------------------------------------------------------------


def test_wait_for_change_wakes_on_another_connections_commit(backend):
    async def main():
        bot = await backend.open()
        worker = await backend.open()
        try:
            assert await bot.wait_for_change(0) is False  # records the starting point
            assert await bot.wait_for_change(0.1) is False
            await bot.register_worker('own', {})  # its own commits are not news
            assert await bot.wait_for_change(0.2) is False
            waiter = asyncio.create_task(bot.wait_for_change(5))
            await asyncio.sleep(0.1)
            started = asyncio.get_running_loop().time()
            await worker.register_worker('w', {})
            woke = await asyncio.wait_for(waiter, 3)
            return woke, asyncio.get_running_loop().time() - started
        finally:
            await bot.close()
            await worker.close()

    woke, seconds = asyncio.run(main())
    assert woke is True and seconds < 1.0


def test_claimers_on_separate_connections_share_the_queue_without_duplicates(backend):
    async def main():
        setup = await backend.open()
        for key, value in {**RELAXED, 'daily_imagines': 10_000, 'queue_cap': 1000}.items():
            await setup.set_limit(0, key, value, actor_id=None)
        for i in range(300):
            await setup.enqueue(imagine(user_id=i % 7))
        stores = [await backend.open() for _ in range(6)]

        async def drain(store, name):
            got = []
            while batch := await store.claim(name, WorkerCaps(('imagine:tiny:',), max_batch=3), LEASE):
                got += [job.id for job in batch]
                for job in batch:
                    await store.complete(job.lease, {}, 0.0)
            return got

        try:
            return await asyncio.gather(*(drain(s, f'w{i}') for i, s in enumerate(stores)))
        finally:
            for store in [setup, *stores]:
                await store.close()

    claimed = [job_id for got in asyncio.run(main()) for job_id in got]
    assert len(claimed) == len(set(claimed)) == 300


def test_a_members_own_defaults_are_kept_per_member_and_forgotten_one_by_one(backend):
    async def body(store, clock):
        assert await store.member_settings(1) == {}
        await store.set_member_setting(1, 'temperature', 0.8)
        after = await store.set_member_setting(1, 'negative', 'text, watermark')
        assert after == {'temperature': 0.8, 'negative': 'text, watermark'}
        await store.set_member_setting(2, 'top_k', None)  # forgetting what was never set changes nothing
        assert await store.member_settings(2) == {}
        await store.set_member_setting(1, 'temperature', 1.2)  # replaced, not added
        assert await store.set_member_setting(1, 'negative', None) == {'temperature': 1.2}
        return await store.member_settings(1)

    assert run(body, backend) == {'temperature': 1.2}
