"""Admission limits, checked in the enqueue transaction: quotas (counted from the rows, given back on
failure and cancel, reset at 00:00 UTC), pending jobs, cooldown, queue cap, bans, per-guild and per-user
settings, blocked words, channels, and the audit log."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
from odd_input import SETTING_VALUES_ACCEPTED, SETTING_VALUES_REFUSED

from edalle import errors
from edalle.jobs import BOT_WIDE, JobStatus, Limits, SqliteJobStore, WorkerCaps
from edalle.jobs.clock import ManualClock
from edalle.jobs.limits import day_bounds, find_blocked_word, validate_setting
from edalle.operations import expand as expand_op
from edalle.operations import imagine as imagine_op

GUILD = 10
CAPS = WorkerCaps(('imagine:tiny:', 'expand:tiny'))


def run(body, tmp_path):
    async def main():
        clock = ManualClock()
        store = await SqliteJobStore.open(tmp_path / 'edalle.db', clock=clock)
        try:
            return await body(store, clock)
        finally:
            await store.close()

    return asyncio.run(main())


def imagine(user_id=1, guild_id=GUILD, channel_id=20, prompt='a cat', n=9):
    return imagine_op.request(user_id=user_id, guild_id=guild_id, channel_id=channel_id, prompt=prompt, n=n, preset='tiny')


def test_daily_quota_is_counted_refused_with_its_reset_time_and_given_back(tmp_path):
    async def body(store, clock):
        await store.set_limit(GUILD, 'daily_imagines', 3, actor_id=7)
        await store.set_limit(GUILD, 'cooldown_seconds', 0, actor_id=7)
        a = await store.enqueue(imagine())
        b = await store.enqueue(imagine())
        assert (a.quota.imagines_left, b.quota.imagines_left) == (2, 1)
        c = await store.enqueue(imagine())
        with pytest.raises(errors.QuotaExceeded) as refused:
            await store.enqueue(imagine())
        # give back: one cancelled while queued, one failed for good
        await store.cancel(c.job.id)
        job = (await store.claim('w', CAPS, 30))[0]
        assert await store.fail(job.lease, 'The model crashed.', retryable=False) is JobStatus.FAILED
        quota = await store.quota(GUILD, 1)
        assert (quota.imagines_used, quota.imagines_left) == (1, 2)
        await store.enqueue(imagine())
        await store.enqueue(imagine())
        with pytest.raises(errors.QuotaExceeded):
            await store.enqueue(imagine())
        # a succeeded job keeps counting
        job = (await store.claim('w', CAPS, 30))[0]
        await store.complete(job.lease, {'candidates': []}, 1.0)
        assert (await store.quota(GUILD, 1)).imagines_used == 3
        # the next UTC day starts fresh
        clock.now = day_bounds(clock.now)[1]
        assert (await store.quota(GUILD, 1)).imagines_used == 0
        assert (await store.enqueue(imagine())).quota.imagines_left == 2
        return refused.value

    refused = run(body, tmp_path)
    midnight = day_bounds(ManualClock().now)[1]
    assert refused.resets_at == midnight and refused.limit == 3 and refused.kind == 'imagine'
    assert datetime.fromtimestamp(midnight, tz=timezone.utc).strftime('%H:%M') == '00:00'
    assert '00:00 UTC' in str(refused) and 'in 16 h 00 min' in str(refused)  # the clock stands at 08:00 UTC


def test_expand_quota_is_separate_and_checks_the_parent(tmp_path):
    async def body(store, clock):
        await store.set_limit(GUILD, 'daily_expands', 1, actor_id=7)
        await store.set_limit(GUILD, 'cooldown_seconds', 0, actor_id=7)
        parent = (await store.enqueue(imagine())).job

        def expand(index=0, parent_job_id=parent.id, steps=None):
            return expand_op.request(
                user_id=1,
                guild_id=GUILD,
                channel_id=20,
                parent_job_id=parent_job_id,
                parent_index=index,
                steps=steps,
                preset='tiny',
            )

        with pytest.raises(errors.InvalidParent):
            await store.enqueue(expand())  # parent still queued
        job = (await store.claim('w', CAPS, 30))[0]
        await store.complete(job.lease, {'candidates': [{'index': 0}, {'index': 1}]}, 1.0)
        with pytest.raises(errors.InvalidParent, match='no candidate 6'):
            await store.enqueue(expand(index=5))
        with pytest.raises(errors.InvalidParent):
            await store.enqueue(expand(parent_job_id=999))
        with pytest.raises(errors.RequestTooLarge, match='at most 200 expand steps'):
            await store.enqueue(expand(steps=201))
        admission = await store.enqueue(expand(index=1))
        assert admission.job.parent_job_id == parent.id and admission.job.compat_key == 'expand:tiny'
        with pytest.raises(errors.QuotaExceeded, match="all 1 of today's edit jobs"):
            await store.enqueue(expand())
        return admission.quota

    quota = run(body, tmp_path)
    assert (quota.imagines_used, quota.edits_used, quota.edits_left) == (1, 1, 0)


def test_pending_cooldown_and_queue_cap(tmp_path):
    async def body(store, clock):
        with pytest.raises(errors.CooldownActive) as cooldown:
            await store.enqueue(imagine())
            await store.enqueue(imagine())
        assert cooldown.value.retry_after == pytest.approx(Limits().cooldown_seconds)
        clock.advance(Limits().cooldown_seconds)
        await store.enqueue(imagine())
        clock.advance(60)
        await store.enqueue(imagine())
        clock.advance(60)
        with pytest.raises(errors.TooManyPending, match='already have 3 jobs'):
            await store.enqueue(imagine())
        await store.set_setting(BOT_WIDE, 'queue_cap', 4, actor_id=None)
        await store.enqueue(imagine(user_id=2))
        with pytest.raises(errors.QueueFull):
            await store.enqueue(imagine(user_id=3))
        return True

    assert run(body, tmp_path)


def test_limits_layer_code_defaults_bot_wide_guild_and_user(tmp_path):
    async def body(store, clock):
        assert await store.get_limits(GUILD, 1) == Limits()
        await store.set_setting(BOT_WIDE, 'daily_imagines', 50, actor_id=None)
        await store.set_setting(BOT_WIDE, 'daily_expands', 5, actor_id=None)
        await store.set_setting(GUILD, 'daily_imagines', 40, actor_id=7)
        await store.set_override(BOT_WIDE, 1, 'daily_expands', 7, actor_id=None)
        await store.set_override(GUILD, 1, 'daily_imagines', 100, actor_id=7)
        mine = await store.get_limits(GUILD, 1)
        other = await store.get_limits(GUILD, 2)
        elsewhere = await store.get_limits(99, 1)
        in_dms = await store.get_limits(None, 2)
        await store.set_override(GUILD, 1, 'daily_imagines', None, actor_id=7)  # None: back to the layer below
        reset = await store.get_limits(GUILD, 1)
        return mine, other, elsewhere, in_dms, reset

    mine, other, elsewhere, in_dms, reset = run(body, tmp_path)
    assert (mine.daily_imagines, mine.daily_edits) == (100, 7)
    assert (other.daily_imagines, other.daily_edits) == (40, 5)
    assert (elsewhere.daily_imagines, elsewhere.daily_edits) == (50, 7)
    assert (in_dms.daily_imagines, in_dms.daily_edits) == (50, 5)
    assert reset.daily_imagines == 40


def test_bans_in_a_guild_everywhere_and_until_a_time(tmp_path):
    async def body(store, clock):
        await store.ban(GUILD, 1, actor_id=7, reason='spam')
        with pytest.raises(errors.Banned, match='reason: spam'):
            await store.enqueue(imagine(user_id=1))
        await store.enqueue(imagine(user_id=1, guild_id=99))  # another guild is unaffected
        await store.ban(BOT_WIDE, 2, actor_id=None, until=clock.now + 3600)
        with pytest.raises(errors.Banned, match='until'):
            await store.enqueue(imagine(user_id=2, guild_id=99))
        clock.advance(3601)
        await store.enqueue(imagine(user_id=2, guild_id=99))  # expired
        assert await store.unban(GUILD, 1, actor_id=7)
        assert not await store.unban(GUILD, 1, actor_id=7)
        await store.enqueue(imagine(user_id=1))
        return await store.get_ban(GUILD, 1)

    assert run(body, tmp_path) is None


def test_guild_settings_blocked_words_channels_and_request_size(tmp_path):
    async def body(store, clock):
        await store.set_setting(GUILD, 'cooldown_seconds', 0, actor_id=7)
        await store.set_setting(GUILD, 'blocked_words', ['Gore', ' spoilers '], actor_id=7)
        await store.set_setting(GUILD, 'allowed_channel_ids', [20, '21'], actor_id=7)
        await store.set_setting(GUILD, 'admin_role_id', 555, actor_id=7)
        await store.set_setting(GUILD, 'candidates_per_imagine', 4, actor_id=7)
        settings = await store.get_settings(GUILD)
        with pytest.raises(errors.PromptRejected):
            await store.enqueue(imagine(prompt='a GORE scene'))
        await store.enqueue(imagine(prompt='gorey gorge', n=4))  # whole words only
        with pytest.raises(errors.ChannelNotAllowed):
            await store.enqueue(imagine(channel_id=22, n=4))
        with pytest.raises(errors.RequestTooLarge, match='at most 4 candidates'):
            await store.enqueue(imagine(n=9))
        return settings

    settings = run(body, tmp_path)
    assert settings.blocked_words == ('gore', 'spoilers') and settings.allowed_channel_ids == (20, 21)
    assert settings.admin_role_id == 555 and settings.limits.candidates_per_imagine == 4
    assert settings.channel_allowed(21) and not settings.channel_allowed(22)


def test_every_admin_change_is_audited(tmp_path):
    async def body(store, clock):
        await store.set_limit(GUILD, 'daily_imagines', 5, actor_id=7, reason='busy week')
        await store.set_limit(GUILD, 'daily_imagines', 6, actor_id=8)
        await store.set_override(GUILD, 1, 'pending_per_user', 1, actor_id=7)
        await store.ban(GUILD, 1, actor_id=7, reason='spam')
        await store.unban(GUILD, 1, actor_id=8)
        await store.set_setting(GUILD, 'blocked_words', ['x'], actor_id=7)
        return await store.audit_log(GUILD), await store.audit_log(99)

    entries, elsewhere = run(body, tmp_path)
    assert elsewhere == []
    summary = [(e.action, e.actor_id, e.target_user_id, e.key, e.old_value, e.new_value) for e in reversed(entries)]
    assert summary == [
        ('set_setting', 7, None, 'daily_imagines', None, 5),
        ('set_setting', 8, None, 'daily_imagines', 5, 6),
        ('set_override', 7, 1, 'pending_per_user', None, 1),
        ('ban', 7, 1, None, None, {'until': None}),
        ('unban', 8, 1, None, None, None),
        ('set_setting', 7, None, 'blocked_words', None, ['x']),
    ]
    assert entries[-1].reason == 'busy week'


def test_settings_are_validated_with_readable_messages(tmp_path):
    async def body(store, clock):
        with pytest.raises(errors.InvalidSetting, match='between 1 and 16'):
            await store.set_limit(GUILD, 'candidates_per_imagine', 40, actor_id=7)
        with pytest.raises(errors.InvalidSetting, match='not a limit'):
            await store.set_override(GUILD, 1, 'blocked_words', ['x'], actor_id=7)
        with pytest.raises(errors.InvalidSetting, match='no setting called'):
            await store.set_setting(GUILD, 'colour', 'red', actor_id=7)
        return await store.audit_log(GUILD)

    assert run(body, tmp_path) == []  # refused changes leave no trace
    assert validate_setting('cooldown_seconds', '2.5') == 2.5
    for key, value in [
        ('daily_imagines', 2.5),
        ('daily_imagines', True),
        ('daily_imagines', 'many'),
        ('blocked_words', 'x'),
    ]:
        with pytest.raises(errors.InvalidSetting):
            validate_setting(key, value)


def test_find_blocked_word_matches_whole_words_in_any_case():
    assert find_blocked_word('A Gory scene', ['gory']) == 'gory'
    assert find_blocked_word('allegory', ['gory']) is None
    assert find_blocked_word('c++ code', ['c++']) == 'c++'


@pytest.mark.parametrize(('key', 'value', 'stored'), SETTING_VALUES_ACCEPTED)
def test_limit_values_are_normalised(key, value, stored):
    assert validate_setting(key, value) == stored and type(validate_setting(key, value)) is type(stored)
    assert str(validate_setting(key, value)) != '-0.0'


@pytest.mark.parametrize(('key', 'value'), SETTING_VALUES_REFUSED)
def test_limit_values_that_are_not_finite_numbers_in_range_are_refused_with_the_range(key, value):
    """`nan` slipped past the bounds (it compares false with both) and `.admin` then showed "nan"."""
    with pytest.raises(errors.InvalidSetting) as refused:
        validate_setting(key, value)
    low, high = {'cooldown_seconds': (0, 86400), 'daily_imagines': (0, 10000)}[key]
    assert str(refused.value) == (
        f'{key} takes a {"number" if key == "cooldown_seconds" else "whole number"} between {low} and {high}.'
    )


def test_discord_ids_in_settings_must_be_ids_a_store_can_hold():
    assert validate_setting('admin_role_id', '555') == 555
    assert validate_setting('allowed_channel_ids', [20, '21', 20]) == [20, 21]
    for key, value in [
        ('admin_role_id', '99999999999999999999'),
        ('admin_role_id', 2**63),
        ('admin_role_id', -5),
        ('admin_role_id', 'nan'),
        ('admin_role_id', True),
        ('allowed_channel_ids', [20, 10**20]),
        ('allowed_channel_ids', ['-1']),
        ('allowed_channel_ids', [1.5]),
    ]:
        with pytest.raises(errors.InvalidSetting, match=f'^{key} takes'):
            validate_setting(key, value)


def test_a_nan_stored_before_validation_refused_it_is_ignored_on_read(tmp_path):
    """A database written by an older edalle may hold `NaN` (JSON) for a limit: the default applies instead."""

    async def body(store, clock):
        await store.set_limit(GUILD, 'cooldown_seconds', 5, actor_id=7)
        await store._conn.execute("UPDATE guild_settings SET value = 'NaN' WHERE key = 'cooldown_seconds'")
        await store._conn.commit()
        await store.set_override(GUILD, 1, 'daily_imagines', 4, actor_id=7)
        await store._conn.execute("UPDATE user_overrides SET value = '1e999' WHERE key = 'daily_imagines'")
        await store._conn.commit()
        return await store.get_limits(GUILD, 1)

    limits = run(body, tmp_path)
    assert limits.cooldown_seconds == Limits().cooldown_seconds and limits.daily_imagines == Limits().daily_imagines
