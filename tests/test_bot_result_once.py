"""A result is posted once even when Discord saves the post and then answers with a server error.

The real courier (`bot.delivery.Courier`) posts a finished job through the real discord.py client to the
local fake Discord, which is told to carry a request out and then answer 5xx (`inject_error_after_saving`).
No worker runs: the test plays it through the store's own verbs and writes the result pictures itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
from discord_fake import FakeDiscord, FakeMessage, run, running_bot, running_fake
from PIL import Image

from bot.bot import EDalleBot
from bot.settings import Settings
from edalle.jobs import BOT_WIDE, Job, SqliteJobStore, WorkerCaps
from edalle.operations import imagine as imagine_op

FAST = dict(preset='tiny', run_worker=False, sync_commands='always', guild_ready_timeout=0.05, delivery_lease_seconds=0.5)
CANDIDATES = 2


@contextlib.asynccontextmanager
async def courier_bot(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[EDalleBot]:
    """The bot against `fake`, its courier stopped: each test drives `post_result` / `tick` itself."""
    store = await SqliteJobStore.open(tmp_path / 'edalle.db')
    await store.set_setting(BOT_WIDE, 'cooldown_seconds', 0, actor_id=None)
    settings = Settings(token=fake.token, data_dir=tmp_path, api_base=fake.api_base, gateway_url=fake.gateway_url, **FAST)
    bot = EDalleBot(settings=settings, store=store)
    try:
        async with running_bot(bot, fake, timeout=15):
            await bot.courier.stop()
            yield bot
    finally:
        await store.close()


async def status_message(bot: EDalleBot, fake: FakeDiscord) -> discord.Message:
    """The message a job's progress is shown in until its result replaces it, posted as the bot posts it."""
    channel = bot.get_channel(fake.channel.id)
    assert isinstance(channel, discord.TextChannel)
    return await channel.send('queued')


async def finished_imagine(bot: EDalleBot, fake: FakeDiscord, status: discord.Message | None = None) -> Job:
    """An imagine job of alice's in `fake.channel`, finished as a worker would finish it (pictures on disk)."""
    request = imagine_op.request(
        user_id=fake.alice.id, guild_id=fake.guild.id, channel_id=fake.channel.id, prompt='a red fox', n=CANDIDATES
    )
    job = (await bot.store.enqueue(request)).job
    if status is not None:
        await bot.store.set_status_message(job.id, status.id)
    (claimed,) = await bot.store.claim('test-worker', WorkerCaps(()), 30)
    assert claimed.lease is not None
    folder = bot.settings.data_dir / 'images' / str(job.id)
    folder.mkdir(parents=True)
    candidates = []
    for index in range(CANDIDATES):
        Image.new('RGB', (64, 64), (200, 40 * index, 0)).save(folder / f'candidate-{index + 1}.png')
        candidates.append({'index': index, 'path': f'images/{job.id}/candidate-{index + 1}.png', 'score': 0.3})
    Image.new('RGB', (130, 64), (90, 90, 90)).save(folder / 'grid.png')
    result = {'candidates': candidates, 'grid': f'images/{job.id}/grid.png'}
    await bot.store.complete(claimed.lease, result, 1.0)
    return await bot.store.get(job.id)


def results_posted(fake: FakeDiscord, job: Job) -> list[FakeMessage]:
    """The channel's messages that show this job's result: its grid picture and its pick buttons."""
    return [m for m in fake.bot_messages(fake.channel) if m.attachments and f'ed:pick:{job.id}:0' in m.custom_ids()]


def test_a_result_post_saved_then_answered_500_is_posted_once(tmp_path: Path, discord_errors: Any, bot_errors: Any) -> None:
    """discord.py retries a 500 by itself, with the same nonce: the fake (as Discord) returns the saved message."""

    async def main() -> None:
        async with running_fake() as fake, courier_bot(fake, tmp_path) as bot:
            job = await finished_imagine(bot, fake)
            route = rf'^/channels/{fake.channel.id}/messages$'
            fake.inject_error_after_saving('POST', route, 500)
            message_id = await bot.courier.post_result(job)
            (posted,) = results_posted(fake, job)
            assert message_id == posted.id and posted.nonce == job.delivery_nonce
            assert [r.status for r in fake.requests_matching('POST', route)] == [500, 200]

    run(main(), 60)


def test_a_result_post_saved_then_answered_503_is_posted_once_by_the_next_round(
    tmp_path: Path, discord_errors: Any, bot_errors: Any
) -> None:
    """A 503 reaches the courier, which leaves the delivery leased; its next round posts again with the job's
    nonce and gets the saved message back, and records that one."""

    async def main() -> None:
        async with running_fake() as fake, courier_bot(fake, tmp_path) as bot:
            job = await finished_imagine(bot, fake)
            fake.inject_error_after_saving('POST', rf'^/channels/{fake.channel.id}/messages$', 503)
            await bot.courier.tick()
            (posted,) = results_posted(fake, job)
            assert (await bot.store.get(job.id)).delivered_at is None  # the courier does not know it was saved
            await asyncio.sleep(FAST['delivery_lease_seconds'] + 0.2)  # the delivery lease runs out
            await bot.courier.tick()
            assert results_posted(fake, job) == [posted]
            done = await bot.store.get(job.id)
            assert done.delivered_at is not None and done.result_message_id == posted.id
            assert bot.courier.delivered == [job.id]

    run(main(), 60)


def test_a_result_edit_saved_then_answered_500_is_posted_once(tmp_path: Path, discord_errors: Any, bot_errors: Any) -> None:
    """The usual path: the result replaces the status message. discord.py retries the edit, which is harmless."""

    async def main() -> None:
        async with running_fake() as fake, courier_bot(fake, tmp_path) as bot:
            status = await status_message(bot, fake)
            job = await finished_imagine(bot, fake, status)
            fake.inject_error_after_saving('PATCH', rf'^/channels/{fake.channel.id}/messages/{status.id}$', 500)
            assert await bot.courier.post_result(job) == status.id
            assert [m.id for m in results_posted(fake, job)] == [status.id]

    run(main(), 60)


def test_a_result_edit_saved_then_answered_503_is_not_posted_again_as_a_new_message(
    tmp_path: Path, discord_errors: Any, bot_errors: Any
) -> None:
    async def main() -> None:
        async with running_fake() as fake, courier_bot(fake, tmp_path) as bot:
            status = await status_message(bot, fake)
            job = await finished_imagine(bot, fake, status)
            fake.inject_error_after_saving('PATCH', rf'^/channels/{fake.channel.id}/messages/{status.id}$', 503)
            with contextlib.suppress(discord.DiscordServerError):  # the fixed courier retries in its next round
                await bot.courier.post_result(job)
            await bot.courier.post_result(job)
            assert [m.id for m in results_posted(fake, job)] == [status.id]

    run(main(), 60)
