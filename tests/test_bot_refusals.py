"""Everything the bot refuses, and how: one short sentence a member can act on, and nothing changed or charged.

No worker runs here: refusals happen before a job exists, and accepted jobs simply wait in the queue.
The real discord.py client talks to the local fake Discord, as in `test_bot_e2e.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from discord_fake import FakeDiscord, FakeDiscordError, FakeMessage, Permissions, run, running_bot, running_fake

from bot.bot import EDalleBot
from bot.settings import Settings
from edalle.jobs import BOT_WIDE, Job, SqliteJobStore, WorkerCaps

FAST = dict(preset='tiny', run_worker=False, sync_commands='always', guild_ready_timeout=0.05)


@contextlib.asynccontextmanager
async def edalle_bot(fake: FakeDiscord, tmp_path: Path, **overrides: Any) -> AsyncIterator[EDalleBot]:
    store = await SqliteJobStore.open(tmp_path / 'edalle.db')
    await store.set_setting(BOT_WIDE, 'cooldown_seconds', 0, actor_id=None, reason='tests: no waiting between jobs')
    settings = Settings(
        token=fake.token,
        data_dir=tmp_path,
        api_base=fake.api_base,
        gateway_url=fake.gateway_url,
        **{**FAST, **overrides},
    )
    bot = EDalleBot(settings=settings, store=store)
    try:
        async with running_bot(bot, fake, timeout=15):
            yield bot
    finally:
        await store.close()


async def say(fake: FakeDiscord, user: Any, text: str, channel: Any = None, **kwargs: Any) -> FakeMessage:
    """A member writes `text`; returns the bot's answer in that channel."""
    await fake.send_user_message(channel or fake.channel, user, text, **kwargs)
    return await fake.wait_for_message(channel or fake.channel)


async def jobs_of(bot: EDalleBot, user_id: int) -> list[Job]:
    return await bot.store.user_jobs(user_id, active_only=False)


def test_admin_limits_quota_and_refused_admin_commands(tmp_path: Path, discord_errors: Any, bot_errors: Any) -> None:
    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, tmp_path) as bot:
            guild = fake.guild.id
            answer = await say(fake, fake.moderator, '.admin set daily_imagines 1')
            assert 'daily_imagines` is now 1' in answer.content

            answer = await say(fake, fake.alice, '.admin set daily_imagines 100')
            assert "Only this server's bot admins" in answer.content
            assert (await bot.store.get_limits(guild)).daily_imagines == 1
            log = await bot.store.audit_log(guild)
            assert [(e.actor_id, e.key, e.new_value) for e in log] == [(fake.moderator.id, 'daily_imagines', 1)]

            # /admin is not even listed for members who cannot manage the server (default_permissions)
            with pytest.raises(FakeDiscordError, match='lacks the permissions /admin requires'):
                await fake.invoke_slash('admin show', {}, fake.alice)
            admin = fake.synced_command('admin', guild=fake.guild)
            assert admin is not None and int(admin['default_member_permissions']) == Permissions.MANAGE_GUILD
            assert admin['contexts'] == [0]  # in servers only, never in DMs

            first = await say(fake, fake.alice, '.imagine a lighthouse')
            assert 'queued' in first.content
            second = await say(fake, fake.alice, '.imagine another lighthouse')
            assert "used all 1 of today's imagine jobs" in second.content and 'resets at' in second.content
            assert len(await jobs_of(bot, fake.alice.id)) == 1
            quota = await bot.store.quota(guild, fake.alice.id)
            assert quota.imagines_used == 1

            answer = await say(fake, fake.moderator, f'.admin user {fake.alice.mention} daily_imagines 3')
            assert 'is now 3' in answer.content
            assert 'queued' in (await say(fake, fake.alice, '.imagine a third lighthouse')).content

            await fake.invoke_slash('admin show', {}, fake.moderator)
            shown = await fake.wait_for_message(None, ephemeral=True)
            assert '`daily_imagines`: 1 (default 25)' in shown.content

            answer = await say(fake, fake.moderator, '.admin log')
            assert 'set_override' in answer.content and 'set_setting' in answer.content

    run(main(), 60)


def test_blocked_words_bans_and_channels(tmp_path: Path, discord_errors: Any, bot_errors: Any) -> None:
    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, tmp_path) as bot:
            assert 'Blocked' in (await say(fake, fake.moderator, '.admin block Café, gore')).content
            answer = await say(fake, fake.alice, '.imagine un CAFE noir')
            assert 'blocked word “café”' in answer.content
            assert 'queued' in (await say(fake, fake.alice, '.imagine a cafeteria')).content  # whole words only

            answer = await say(fake, fake.moderator, f'.admin ban {fake.bob.mention} spamming')
            assert 'can no longer use' in answer.content
            answer = await say(fake, fake.bob, '.imagine a red fox')
            assert 'not allowed to use image commands here' in answer.content and 'spamming' in answer.content
            await fake.invoke_slash('imagine', {'prompt': 'a blue fox'}, fake.bob)
            private = await fake.wait_for_message(None, ephemeral=True)
            assert 'not allowed' in private.content
            assert await jobs_of(bot, fake.bob.id) == []
            await say(fake, fake.moderator, f'.admin unban {fake.bob.mention}')
            assert 'queued' in (await say(fake, fake.bob, '.imagine a green fox')).content

            answer = await say(fake, fake.moderator, f'.admin channel add {fake.images_channel.mention}')
            assert fake.images_channel.mention in answer.content
            answer = await say(fake, fake.alice, '.imagine a tree')
            assert 'not enabled in this channel' in answer.content
            answer = await say(fake, fake.alice, '.imagine a tree', fake.images_channel)
            assert 'queued' in answer.content
            assert len(await jobs_of(bot, fake.alice.id)) == 2

    run(main(), 60)


def test_prompts_ratios_and_unknown_things(tmp_path: Path, discord_errors: Any, bot_errors: Any) -> None:
    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, tmp_path) as bot:
            long = ' '.join(['a very long prompt about a lighthouse'] * 20)
            answer = await say(fake, fake.alice, f'.imagine {long}')
            assert 'queued' in answer.content and 'cut it' in answer.content
            (job,) = await jobs_of(bot, fake.alice.id)
            assert len(job.payload['prompt']) <= 200 and long.startswith(job.payload['prompt'])

            answer = await say(fake, fake.alice, '.expand 16:9 a wider sea')
            assert 'nothing to expand' in answer.content
            answer = await say(fake, fake.alice, '.expand 10:1', reply_to=answer)
            assert 'out of range' in answer.content and '16:9' in answer.content
            answer = await say(fake, fake.alice, '.imagine')
            assert 'Missing `prompt`' in answer.content
            answer = await say(fake, fake.alice, '.job 987654')
            assert "can't find job #987654" in answer.content
            answer = await say(fake, fake.bob, f'.cancel {job.id}')
            assert 'Only the person who started this job' in answer.content
            answer = await say(fake, fake.moderator, f'.cancel {job.id}')  # admins may cancel anyone's
            assert 'Cancelled job' in answer.content
            assert (await bot.store.quota(fake.guild.id, fake.alice.id)).imagines_used == 0  # cancelled: not charged
            answer = await say(fake, fake.alice, '.info')
            assert '25 of 25 imagines' in answer.content
            with pytest.raises(FakeDiscordError, match='not a choice'):  # /expand offers only the ratios it can do
                await fake.invoke_slash('expand', {'ratio': '10:1'}, fake.alice)
            answer = await say(fake, fake.alice, '.expand 10:1')  # typed, it is checked with examples
            assert 'out of range' in answer.content and '16:9' in answer.content
            await fake.invoke_slash('expand', {}, fake.bob)
            private = await fake.wait_for_message(None, ephemeral=True)
            assert 'nothing to expand' in private.content

    run(main(), 60)


def test_missing_permissions_are_listed(tmp_path: Path, discord_errors: Any, bot_errors: Any) -> None:
    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, tmp_path) as bot:
            await fake.set_channel_permissions(fake.images_channel, fake.bot_user, deny=Permissions.ATTACH_FILES)
            answer = await say(fake, fake.alice, '.imagine a fox', fake.images_channel)
            assert 'missing permissions' in answer.content and 'Attach Files' in answer.content
            await fake.set_channel_permissions(fake.images_channel, fake.bot_user, deny=Permissions.SEND_MESSAGES)
            await fake.send_user_message(fake.images_channel, fake.alice, '.imagine a fox')
            dm = await fake.wait_for_message(fake.dm_channel(fake.alice))
            assert 'Send Messages' in dm.content
            assert await jobs_of(bot, fake.alice.id) == []

    run(main(), 60)


def test_a_429_is_waited_out_and_nothing_is_charged_twice(tmp_path: Path, discord_errors: Any, bot_errors: Any) -> None:
    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, tmp_path) as bot:
            fake.inject_429('POST', r'/channels/\d+/messages$', retry_after=0.3, count=2)
            answer = await say(fake, fake.alice, '.imagine a patient fox')
            assert 'queued' in answer.content
            assert len(fake.requests_matching('POST', r'/channels/\d+/messages$')) >= 3
            assert len([m for m in fake.bot_messages(fake.channel) if 'queued' in m.content]) == 1
            assert len(await jobs_of(bot, fake.alice.id)) == 1
            assert (await bot.store.quota(fake.guild.id, fake.alice.id)).imagines_used == 1

    run(main(), 60)


def test_unexpected_errors_show_an_id_that_is_in_the_logs(
    tmp_path: Path, discord_errors: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, tmp_path) as bot:

            async def broken(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError(f'database exploded; token={fake.token}')

            bot.store.quota = broken  # type: ignore[method-assign]
            answer = await say(fake, fake.alice, '.info')
            match = re.search(r'error `([0-9a-f]{8})`', answer.content)
            assert match, answer.content
            assert 'exploded' not in answer.content and fake.token not in answer.content
            logged = [r for r in caplog.records if r.levelno >= logging.ERROR and match[1] in r.getMessage()]
            assert logged and logged[0].exc_info is not None

    run(main(), 60)


def test_a_failed_job_is_reported_and_results_fall_back_to_dms(tmp_path: Path, discord_errors: Any, bot_errors: Any) -> None:
    """A job the worker gives up on is reported with its reason; when the channel refuses the bot, by DM."""

    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, tmp_path) as bot:
            status = await say(fake, fake.alice, '.imagine an impossible picture', fake.images_channel)
            await fake.delete_user_message(status)
            deny = Permissions.SEND_MESSAGES | Permissions.ATTACH_FILES
            await fake.set_channel_permissions(fake.images_channel, fake.bot_user, deny=deny)
            # Play the worker through the store's own verbs: claim the job, then fail it for good.
            (job,) = await bot.store.claim('test-worker', WorkerCaps(()), 30)
            assert job.lease is not None
            await bot.store.fail(job.lease, 'The picture could not be drawn.', retryable=False)
            dm = await fake.wait_for_message(fake.dm_channel(fake.alice), timeout=10)
            assert f'job #{job.id} failed: The picture could not be drawn.' in dm.content
            assert 'missing permissions' in dm.content
            for _ in range(50):  # the courier records the post just after it
                if (await bot.store.get(job.id)).delivered_at is not None:
                    break
                await asyncio.sleep(0.05)
            assert (await bot.store.get(job.id)).result_message_id == dm.id
            assert (await bot.store.quota(fake.guild.id, fake.alice.id)).imagines_used == 0  # failed: not charged

    run(main(), 60)


def test_an_admin_switches_an_operation_off_and_on_and_its_commands_and_buttons_say_so(
    tmp_path: Path, discord_errors: Any, bot_errors: Any
) -> None:
    """`.admin op disable expand`: `.expand` says it is off here, the ratio buttons answer privately, nothing is
    queued or charged; `/admin op enable` brings it back; both changes are in the audit log."""
    from PIL import Image

    from bot.cogs.expand import EXPAND
    from bot.cogs.imagine import PICK

    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, tmp_path) as bot:
            status = await say(fake, fake.alice, '.imagine a lighthouse')
            # Play the worker through the store's own verbs: the job succeeds with two pictures on disk.
            (job,) = await bot.store.claim('test-worker', WorkerCaps(()), 30)
            folder = tmp_path / 'images' / str(job.id) / '1'
            folder.mkdir(parents=True)
            for name in ('grid.png', 'candidate-1.png', 'candidate-2.png'):
                Image.new('RGB', (256, 256), (90, 20, 20)).save(folder / name)
            pictures = [
                {'index': i, 'path': f'images/{job.id}/1/candidate-{i + 1}.png', 'width': 256, 'height': 256} for i in (0, 1)
            ]
            await bot.store.complete(job.lease, {'pictures': pictures, 'grid': f'images/{job.id}/1/grid.png'}, 1.0)
            grid = await fake.wait_for_edit(status, lambda m: PICK.id(job.id, 0) in m.custom_ids(), timeout=10)
            await fake.click_button(grid, PICK.id(job.id, 1), fake.alice)
            picked = await fake.wait_for_message(fake.channel, lambda m: 'candidate 2 of job' in m.content, timeout=10)

            answer = await say(fake, fake.moderator, '.admin op disable expand')
            assert '`expand` is now switched off' in answer.content
            answer = await say(fake, fake.alice, '.expand 16:9', reply_to=picked)
            assert 'Expand is switched off in this server' in answer.content
            await fake.click_button(picked, EXPAND.id(job.id, 1, '16x9'), fake.alice)
            private = await fake.wait_for_message(None, ephemeral=True, timeout=10)
            assert 'Expand is switched off in this server' in private.content
            assert [j.kind for j in await jobs_of(bot, fake.alice.id)] == ['imagine']
            assert (await bot.store.quota(fake.guild.id, fake.alice.id)).edits_used == 0
            assert 'queued' in (await say(fake, fake.alice, '.imagine a fox')).content  # the others still work
            await fake.invoke_slash('admin show', {}, fake.moderator)
            assert 'Switched off: `expand`' in (await fake.wait_for_message(None, ephemeral=True)).content

            await fake.invoke_slash('admin op', {'action': 'enable', 'operation': 'expand'}, fake.moderator)
            assert 'switched on' in (await fake.wait_for_message(None, ephemeral=True)).content
            answer = await say(fake, fake.alice, '.expand 16:9', reply_to=picked)
            assert 'queued' in answer.content and 'expand to 16:9 of job' in answer.content
            log = [(e.key, e.old_value, e.new_value) for e in await bot.store.audit_log(fake.guild.id)]
            assert log[:2] == [('disabled_operations', ['expand'], None), ('disabled_operations', None, ['expand'])]

    run(main(), 60)
