"""The imagine knobs through the real bot and the local fake Discord: text flags and slash options reach the job,
`/settings` defaults apply under them, bad values are refused without a charge, `{a, b}` makes one job per
choice, ℹ️ shows every knob, 🔄 keeps them, 🖋 Remix edits them. No worker runs: the test plays it through the
store, so what is checked is what the bot asks for and shows."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from discord_fake import FakeDiscord, FakeMessage, run, running_bot, running_fake
from PIL import Image

from bot.bot import EDalleBot
from bot.cogs.imagine import PICK, REMIX, REROLL
from bot.settings import Settings
from bot.utils import custom_ids
from edalle.jobs import BOT_WIDE, Job, SqliteJobStore, WorkerCaps
from edalle.operations.imagine import Knobs

FAST = dict(preset='tiny', run_worker=False, sync_commands='always', guild_ready_timeout=0.05)


@contextlib.asynccontextmanager
async def edalle_bot(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[EDalleBot]:
    store = await SqliteJobStore.open(tmp_path / 'edalle.db')
    for key, value in (('cooldown_seconds', 0), ('pending_per_user', 20)):
        await store.set_setting(BOT_WIDE, key, value, actor_id=None, reason='tests')
    settings = Settings(token=fake.token, data_dir=tmp_path, api_base=fake.api_base, gateway_url=fake.gateway_url, **FAST)
    bot = EDalleBot(settings=settings, store=store)
    try:
        async with running_bot(bot, fake, timeout=15):
            yield bot
    finally:
        await store.close()


async def say(fake: FakeDiscord, user: Any, text: str) -> FakeMessage:
    await fake.send_user_message(fake.channel, user, text)
    return await fake.wait_for_message(fake.channel)


async def latest(bot: EDalleBot, user_id: int) -> Job:
    return (await bot.store.user_jobs(user_id, active_only=False))[0]


async def finish(bot: EDalleBot, tmp_path: Path, job_id: int) -> None:
    """Play the worker: the job succeeds with two pictures on disk that carry its knobs (the others are cancelled)."""
    for other in await bot.store.queue_snapshot(limit=50):
        if other.id != job_id:
            await bot.store.cancel(other.id)
    (job,) = await bot.store.claim('test-worker', WorkerCaps(()), 30)
    assert job.id == job_id
    folder = tmp_path / 'images' / str(job.id) / '1'
    folder.mkdir(parents=True)
    for name in ('grid.png', 'candidate-1.png', 'candidate-2.png'):
        Image.new('RGB', (256, 256), (20, 90, 20)).save(folder / name)
    knobs = Knobs.of(job.payload).to_json()  # every knob, as the imagine runner records them
    pictures = [
        {'index': i, 'path': f'images/{job.id}/1/candidate-{i + 1}.png', 'seed': 100 + i, 'score': 1.0, 'knobs': knobs}
        for i in (0, 1)
    ]
    await bot.store.complete(job.lease, {'pictures': pictures, 'grid': f'images/{job.id}/1/grid.png'}, 1.0)


def test_flags_options_defaults_variants_info_reroll_and_remix(tmp_path: Path, discord_errors: Any, bot_errors: Any) -> None:
    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, tmp_path) as bot:
            alice = fake.alice
            # text flags, short forms too; the prompt is what is left
            answer = await say(
                fake,
                alice,
                '.imagine a fox in snow --seed 42 --temp 0.9 --topk 128 --topp 0.95 --scale 12 --no text, watermark -n 4',
            )
            assert 'queued' in answer.content
            job = await latest(bot, alice.id)
            assert job.payload == {
                'prompt': 'a fox in snow', 'n': 4, 'seed': 42, 'preset': 'tiny', 'temperature': 0.9, 'top_k': 128,
                'top_p': 0.95, 'cond_scale': 12.0, 'negative': 'text, watermark',
            }  # fmt: skip

            # refusals: an unknown flag named, never drawn; out of range with the range; nothing queued or charged
            used = (await bot.store.quota(fake.guild.id, alice.id)).imagines_used
            answer = await say(fake, alice, '.imagine a fox --bogus 3')
            assert '`--bogus`' in answer.content and 'This command takes' in answer.content
            answer = await say(fake, alice, '.imagine a fox --temp 9')
            assert 'from 0.05 to 5' in answer.content
            answer = await say(fake, alice, '.imagine a fox --topk 0.5')
            assert '`--top-k`' in answer.content
            assert (await bot.store.quota(fake.guild.id, alice.id)).imagines_used == used

            # a member's own defaults, under the flags of a command
            answer = await say(fake, alice, '.settings --temp 0.7 --no blurry')
            assert 'temperature 0.7' in answer.content and 'no “blurry”' in answer.content
            await say(fake, alice, '.imagine a quiet lake')
            job = await latest(bot, alice.id)
            assert (job.payload['temperature'], job.payload['negative']) == (0.7, 'blurry')
            await say(fake, alice, '.imagine a quiet lake --temp 1.3')
            assert (await latest(bot, alice.id)).payload['temperature'] == 1.3
            await fake.invoke_slash('info', {}, alice)
            assert 'Your own defaults' in (await fake.wait_for_message(None, ephemeral=True)).content

            # slash options, and /settings reset
            await fake.invoke_slash('imagine', {'prompt': 'a castle', 'top_k': 0, 'scale': 3.5, 'candidates': 2}, alice)
            await fake.wait_for_message(fake.channel, lambda m: 'castle' in m.content)
            job = await latest(bot, alice.id)
            assert (job.payload['top_k'], job.payload['cond_scale'], job.payload['n']) == (None, 3.5, 2)
            await fake.invoke_slash('settings', {'reset': True}, alice)
            assert 'usual ones' in (await fake.wait_for_message(None, ephemeral=True)).content
            assert await bot.store.member_settings(alice.id) == {}

            # {a, b}: one job per choice, each charged
            before = (await bot.store.quota(fake.guild.id, alice.id)).imagines_used
            await fake.send_user_message(fake.channel, alice, '.imagine a {red, blue} ball --seed 5')
            await fake.wait_for_message(fake.channel, lambda m: 'blue ball' in m.content)
            prompts = [j.payload['prompt'] for j in (await bot.store.user_jobs(alice.id, active_only=False))[:2]]
            assert sorted(prompts) == ['a blue ball', 'a red ball']
            assert (await bot.store.quota(fake.guild.id, alice.id)).imagines_used == before + 2
            answer = await say(fake, alice, '.imagine {a, b, c} {d, e}')
            assert 'makes 6 variants; at most 4' in answer.content

            # ℹ️ shows every knob; 🔄 keeps them with a new seed; 🖋 Remix edits them
            status = await say(fake, alice, '.imagine a lighthouse --seed 9 --temp 0.8 --no rain')
            job = await latest(bot, alice.id)
            await finish(bot, tmp_path, job.id)
            grid = await fake.wait_for_edit(status, lambda m: PICK.id(job.id, 0) in m.custom_ids(), timeout=10)
            assert REMIX.id(job.id) in grid.custom_ids()
            await fake.click_button(grid, PICK.id(job.id, 1), alice)
            picked = await fake.wait_for_message(fake.channel, lambda m: 'candidate 2 of job' in m.content)
            await fake.click_button(picked, custom_ids.info(job.id, 1), alice)
            info = await fake.wait_for_message(None, ephemeral=True)
            assert 'Seed: 101' in info.content and 'temperature 0.8 · top-k 50 · top-p off · scale 10' in info.content
            assert 'no “rain”' in info.content

            await fake.click_button(grid, REROLL.id(job.id), alice)
            await fake.wait_for_message(fake.channel, lambda m: 'lighthouse' in m.content and 'queued' in m.content)
            again = await latest(bot, alice.id)
            assert again.id != job.id and again.payload['seed'] is None
            assert (again.payload['temperature'], again.payload['negative']) == (0.8, 'rain')

            opened = await fake.click_button(grid, REMIX.id(job.id), alice)
            await fake.wait_for_interaction_response(opened)
            assert opened.modal is not None
            await fake.submit_modal(
                opened, {'prompt': 'a lighthouse at dawn', 'negative': '', 'seed': '77', 'knobs': '--topk 7'}
            )
            await fake.wait_for_message(fake.channel, lambda m: 'at dawn' in m.content)
            remixed = await latest(bot, alice.id)
            assert remixed.payload['prompt'] == 'a lighthouse at dawn' and remixed.payload['seed'] == 77
            assert (remixed.payload['top_k'], remixed.payload['temperature'], remixed.payload['negative']) == (7, 0.8, '')
            opened = await fake.click_button(grid, REMIX.id(job.id), fake.bob)  # someone else's grid
            assert 'belong to' in (await fake.wait_for_message(None, ephemeral=True)).content
            assert opened.modal is None

    run(main(), 90)
