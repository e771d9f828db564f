"""The bot end to end: the real discord.py client against the local fake Discord, the real worker on `tiny`.

One worker process (`python -m edalle.worker --preset tiny`) serves every test in this module from one
database; each test starts its own fake Discord (so fresh users, guilds and quotas) and its own bot
process-in-a-task, which it may stop and start again to show what survives a restart. Bot-wide limits
are set for speed: no cooldown, and 3 expand steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from discord_fake import FakeDiscord, FakeMessage, run, running_bot, running_fake
from discord_fake.state import image_size
from tiny_worker import serving_tiny_worker

from bot.bot import EDalleBot
from bot.cogs.canvas import ZOOM_PAN
from bot.cogs.dream import DREAM
from bot.cogs.expand import EXPAND, RATIOS
from bot.cogs.imagine import PICK, REMIX, REROLL
from bot.cogs.repaint import CELLS, REPAINT
from bot.cogs.upscale import UPSCALE
from bot.cogs.vary import VARIATION, VARY
from bot.settings import Settings
from bot.utils import custom_ids
from edalle.grid import GAP
from edalle.jobs import Job, JobStatus, SqliteJobStore

pytestmark = pytest.mark.slow
RESULT_TIMEOUT = 150.0  # the first job waits for the worker to load and compile; later ones take seconds
TEST_TIMEOUT = 240.0
FAST = dict(
    preset='tiny',
    run_worker=False,
    sync_commands='always',
    guild_ready_timeout=0.05,
    progress_seconds=0.5,
    preview_seconds=0.5,
    delivery_lease_seconds=5.0,
)


@pytest.fixture(scope='module')
def worker_db(bot_data_dir: Path) -> Iterator[Path]:
    """The module's database, with a tiny worker serving it until the module ends."""
    with serving_tiny_worker(bot_data_dir, bot_data_dir / 'e2e.db', expand_steps=3) as db:
        yield db


@contextlib.asynccontextmanager
async def edalle_bot(fake: FakeDiscord, data_dir: Path, db: Path, **overrides: Any) -> AsyncIterator[EDalleBot]:
    """A bot as `edalle bot --no-worker` builds it, pointed at `fake`; closed (a stopped process) at exit."""
    store = await SqliteJobStore.open(db)
    settings = Settings(
        token=fake.token,
        data_dir=data_dir,
        db_path=db,
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


def job_id_in(message: FakeMessage) -> int:
    match = re.search(r'^job #(\d+)', message.content, re.MULTILINE)  # the second line names the job itself
    assert match, message.content
    return int(match[1])


def is_grid(message: FakeMessage) -> bool:
    return any(cid.startswith('ed:pick:') for cid in message.custom_ids()) and bool(message.attachments)


async def read_job(db: Path, job_id: int) -> Job:
    store = await SqliteJobStore.open(db)
    try:
        return await store.get(job_id)
    finally:
        await store.close()


async def wait_for_job(db: Path, job_id: int, predicate: Any, timeout: float = RESULT_TIMEOUT) -> Job:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await read_job(db, job_id)
        if predicate(job):
            return job
        assert asyncio.get_running_loop().time() < deadline, f'job {job_id} stuck at {job.status}'
        await asyncio.sleep(0.2)


def assert_grid(message: FakeMessage, job_id: int) -> None:
    assert message.custom_ids() == [PICK.id(job_id, i) for i in range(9)] + [
        REROLL.id(job_id),
        custom_ids.cancel(job_id),
        REMIX.id(job_id),
    ]
    side = 3 * 256 + 2 * GAP
    assert len(message.attachments) == 1 and image_size(message.attachments[0].data) == (side, side)
    assert 'best first by CLIP' in message.content


async def wait_for_widened(fake: FakeDiscord, channel: Any, ratio: str, size: tuple[int, int]) -> tuple[FakeMessage, int]:
    status = await fake.wait_for_message(channel, lambda m: f'expand to {ratio}' in m.content, timeout=10)
    expand_id = job_id_in(status)
    assert 'queued' in status.content or 'ETA' in status.content

    def final(message: FakeMessage) -> bool:  # progress edits may carry a preview; the result carries ℹ️
        return 'failed' in message.content or custom_ids.info(expand_id, 0) in message.custom_ids()

    done = await fake.wait_for_edit(status, final, timeout=RESULT_TIMEOUT)
    assert done.attachments, done.content
    assert image_size(done.attachments[0].data) == size
    assert done.custom_ids() == every_next_step(expand_id, timelapse=True)  # any picture is a source
    return done, expand_id


def every_next_step(job_id: int, index: int = 0, *, timelapse: bool, square: bool = False) -> list[str]:
    """The controls under a picture (its result or posted alone), in the order `picture_view` lays them out: every
    operation's buttons, 🎞️ where its run was recorded, ℹ️, then each menu."""
    buttons = [EXPAND.id(job_id, index, '16x9'), EXPAND.id(job_id, index, '9x16'), UPSCALE.id(job_id, index)]
    if square:  # vary keeps token rows of a 256×256 picture
        buttons += [VARY.id(job_id, index, 'subtle'), VARY.id(job_id, index, 'strong')]
    buttons += [REPAINT.id(job_id, index), DREAM.id(job_id, index)]
    buttons += [custom_ids.timelapse(job_id)] if timelapse else []
    return [*buttons, custom_ids.info(job_id, index), RATIOS.id(job_id, index), ZOOM_PAN.id(job_id, index)]


async def wait_for_upscaled(fake: FakeDiscord, channel: Any, size: tuple[int, int]) -> tuple[FakeMessage, int]:
    status = await fake.wait_for_message(channel, lambda m: 'upscale ×4 of job' in m.content, timeout=10)
    upscale_id = job_id_in(status)

    def final(message: FakeMessage) -> bool:
        return 'failed' in message.content or custom_ids.info(upscale_id, 0) in message.custom_ids()

    done = await fake.wait_for_edit(status, final, timeout=RESULT_TIMEOUT)
    assert done.attachments, done.content
    assert image_size(done.attachments[0].data) == size and done.attachments[0].filename.endswith('.png')
    return done, upscale_id


def test_imagine_pick_and_expand_by_buttons_across_a_restart(
    worker_db: Path, bot_data_dir: Path, discord_errors: Any, bot_errors: Any
) -> None:
    """imagine → grid → (the bot restarts) → pick by button → expand by button → widened picture, each posted once."""

    async def main() -> None:
        async with running_fake() as fake:
            async with edalle_bot(fake, bot_data_dir, worker_db):
                await fake.send_user_message(fake.channel, fake.alice, '.imagine a lighthouse in a storm, oil painting')
                status = await fake.wait_for_message(fake.channel)
                job_id = job_id_in(status)
                assert 'queued' in status.content and 'ETA' in status.content
                assert status.custom_ids() == [custom_ids.cancel(job_id)]
                grid = await fake.wait_for_edit(status, is_grid, timeout=RESULT_TIMEOUT)
                assert_grid(grid, job_id)
                assert grid.id == status.id  # the status message became the result
                edits = [datetime.fromisoformat(v['edited_timestamp']) for v in grid.history[1:]]
                assert edits, 'no progress was shown before the result'
                gaps = [(b - a).total_seconds() for a, b in zip(edits, edits[1:], strict=False)]
                assert all(gap >= 0.45 for gap in gaps), gaps  # progress edits are throttled (0.5 s here)

            # A new bot process: nothing in memory; the buttons on the old grid must still work.
            async with edalle_bot(fake, bot_data_dir, worker_db):
                await fake.click_button(grid, PICK.id(job_id, 2), fake.bob)
                note = await fake.wait_for_message(None, ephemeral=True)
                assert 'belong to' in note.content  # someone else's grid: a private note, nothing posted

                await fake.click_button(grid, PICK.id(job_id, 2), fake.alice)
                picked = await fake.wait_for_message(fake.channel, lambda m: 'candidate 3 of job' in m.content)
                assert image_size(picked.attachments[0].data) == (256, 256)
                assert picked.custom_ids() == every_next_step(job_id, 2, timelapse=False, square=True)

                await fake.click_button(picked, custom_ids.info(job_id, 2), fake.alice)
                info = await fake.wait_for_message(None, ephemeral=True)
                assert f'Job #{job_id}' in info.content and 'Seed:' in info.content and 'CLIP score' in info.content

                await fake.click_button(picked, EXPAND.id(job_id, 2, '16x9'), fake.alice)
                widened, expand_id = await wait_for_widened(fake, fake.channel, '16:9', (448, 256))
                await fake.click_button(widened, custom_ids.info(expand_id, 0), fake.alice)
                info = await fake.wait_for_message(None, ephemeral=True)
                assert f'Lineage: imagine #{job_id} → pick 3 → expand 16:9 #{expand_id}' in info.content

                # ⏫ on the pick and on the widened picture: ×4 each side
                await fake.click_button(picked, UPSCALE.id(job_id, 2), fake.alice)
                big, upscale_id = await wait_for_upscaled(fake, fake.channel, (1024, 1024))
                await fake.click_button(widened, UPSCALE.id(expand_id, 0), fake.alice)
                wide, wide_upscale_id = await wait_for_upscaled(fake, fake.channel, (1792, 1024))
                assert UPSCALE.id(upscale_id, 0) not in big.custom_ids()  # an upscale is not upscaled again

        for done in (await read_job(worker_db, job_id), await read_job(worker_db, expand_id)):
            assert done.status is JobStatus.SUCCEEDED and done.delivered_at is not None
        assert (await read_job(worker_db, expand_id)).result_message_id == widened.id
        assert (await read_job(worker_db, wide_upscale_id)).parent_job_id == expand_id
        pictures = [m for m in fake.bot_messages(fake.channel) if m.attachments]
        assert len(pictures) == 5  # grid, candidate, widened, two upscales: nothing posted twice

    run(main(), TEST_TIMEOUT)


def test_reactions_pick_and_expand_and_big_files_are_reencoded(
    worker_db: Path, bot_data_dir: Path, discord_errors: Any, bot_errors: Any
) -> None:
    """3️⃣ on a grid picks, ↔️ on the pick expands; a result over the upload limit arrives as a smaller JPEG."""

    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, bot_data_dir, worker_db, max_upload_bytes=200_000):
            await fake.send_user_message(fake.images_channel, fake.bob, '.imagine a red fox in the snow')
            status = await fake.wait_for_message(fake.images_channel)
            job_id = job_id_in(status)
            grid = await fake.wait_for_edit(status, is_grid, timeout=RESULT_TIMEOUT)
            assert grid.attachments[0].filename.endswith('.jpg') and grid.attachments[0].size <= 200_000
            assert 'Re-encoded as JPEG' in grid.content

            await fake.add_reaction(grid, '3️⃣', fake.alice)  # not alice's grid: ignored
            await fake.add_reaction(grid, '3️⃣', fake.bob)
            picked = await fake.wait_for_message(fake.images_channel, lambda m: 'candidate 3 of job' in m.content)
            assert f'<@{fake.bob.id}>' in picked.content

            await fake.add_reaction(picked, '↔️', fake.bob)
            await fake.add_reaction(picked, '↔️', fake.bob)  # Discord may repeat an event: still one job
            await wait_for_widened(fake, fake.images_channel, '16:9', (448, 256))

            await fake.send_user_message(fake.images_channel, fake.bob, '.expand 2:1 a stormy sea', reply_to=picked)
            widened, expand_id = await wait_for_widened(fake, fake.images_channel, '2:1', (512, 256))
            assert (await read_job(worker_db, expand_id)).payload['prompt'] == 'a stormy sea'
            await asyncio.sleep(0.5)
            candidates = [m for m in fake.bot_messages(fake.images_channel) if 'candidate 3 of job' in m.content]
            assert len(candidates) == 1
            expands = [m for m in fake.bot_messages(fake.images_channel) if 'expand to 16:9' in m.content]
            assert len(expands) == 1
            assert (await read_job(worker_db, job_id)).delivered_at is not None

    run(main(), TEST_TIMEOUT)


def test_slash_commands(worker_db: Path, bot_data_dir: Path, discord_errors: Any, bot_errors: Any) -> None:
    """/imagine, /expand (tall, by job id), /job, /info and /queue, answered within the interaction window."""

    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, bot_data_dir, worker_db):
            record = await fake.invoke_slash('imagine', {'prompt': 'a castle on a hill'}, fake.alice)
            await fake.wait_for_interaction_response(record)
            status = fake.original_response(record)
            assert status is not None and 'queued' in status.content
            job_id = job_id_in(status)
            grid = await fake.wait_for_edit(status, is_grid, timeout=RESULT_TIMEOUT)
            assert_grid(grid, job_id)

            record = await fake.invoke_slash('expand', {'job': job_id, 'candidate': 2, 'ratio': '9:16'}, fake.alice)
            await fake.wait_for_message(
                None, lambda m: f'job #{job_id}, candidate 2' in m.content, ephemeral=True, edited=True, timeout=10
            )
            await wait_for_widened(fake, fake.channel, '9:16', (256, 448))

            await fake.click_button(grid, REROLL.id(job_id), fake.alice)
            reroll = await fake.wait_for_message(fake.channel, lambda m: 'a castle on a hill' in m.content, timeout=10)
            reroll_id = job_id_in(reroll)
            assert reroll_id != job_id and custom_ids.cancel(reroll_id) in reroll.custom_ids()
            await fake.click_button(reroll, custom_ids.cancel(reroll_id), fake.alice)
            note = await fake.wait_for_message(None, ephemeral=True)
            assert f'job #{reroll_id}' in note.content
            await fake.wait_for_edit(reroll, lambda m: 'was cancelled' in m.content, timeout=60)
            assert (await read_job(worker_db, reroll_id)).status is JobStatus.CANCELLED

            await fake.invoke_slash('job', {'job_id': job_id}, fake.bob)
            again = await fake.wait_for_message(fake.channel, lambda m: is_grid(m) and m.id != grid.id)
            assert_grid(again, job_id)

            await fake.invoke_slash('info', {}, fake.alice)
            info = await fake.wait_for_message(None, ephemeral=True)
            assert 'of 25 imagines' in info.content and 'resets' in info.content

            await fake.invoke_slash('queue', {}, fake.alice)
            queue = await fake.wait_for_message(fake.channel, lambda m: 'queue' in m.content or 'running' in m.content)
            assert queue.content

    run(main(), TEST_TIMEOUT)


def test_a_result_finished_while_the_bot_was_down_is_posted_once_after_restart(
    worker_db: Path, bot_data_dir: Path, discord_errors: Any, bot_errors: Any
) -> None:
    """The bot stops after queueing; the worker finishes; the next bot posts the result once (by edit, or by a
    nonce-guarded new message when the status message is gone, even if it tries twice)."""

    async def main() -> None:
        async with running_fake() as fake:
            async with edalle_bot(fake, bot_data_dir, worker_db):
                await fake.send_user_message(fake.channel, fake.alice, '.imagine a quiet harbour at dawn')
                first = await fake.wait_for_message(fake.channel)
                await fake.send_user_message(fake.channel, fake.alice, '.imagine a busy market at noon')
                second = await fake.wait_for_message(fake.channel)
            first_id, second_id = job_id_in(first), job_id_in(second)
            for job_id in (first_id, second_id):
                done = await wait_for_job(worker_db, job_id, lambda j: j.status.is_final)
                assert done.status is JobStatus.SUCCEEDED and done.delivered_at is None
            await fake.delete_user_message(second)  # someone removed the second status message meanwhile

            async with edalle_bot(fake, bot_data_dir, worker_db) as bot:
                grid = await fake.wait_for_edit(first, is_grid, timeout=30)
                assert_grid(grid, first_id)
                replacement = await fake.wait_for_message(
                    fake.channel, lambda m: is_grid(m) and m.id != first.id, timeout=30
                )
                assert_grid(replacement, second_id)
                assert replacement.nonce == f'edalle-job-{second_id}'
                # A crash between sending and recording would make a restarted bot send again: the nonce
                # makes Discord answer with the first message instead of posting a second one.
                again = await bot.courier.post_result(await read_job(worker_db, second_id))
                assert again == replacement.id
                await asyncio.sleep(1.5)  # a few courier rounds: nothing else is posted

        grids = [m for m in fake.bot_messages(fake.channel) if is_grid(m)]
        assert sorted(m.id for m in grids) == sorted([first.id, replacement.id])
        assert (await read_job(worker_db, first_id)).result_message_id == first.id
        assert (await read_job(worker_db, second_id)).result_message_id == replacement.id

    run(main(), TEST_TIMEOUT)


def test_vary_a_pick_then_repaint_a_cell_of_a_variation(
    worker_db: Path, bot_data_dir: Path, discord_errors: Any, bot_errors: Any
) -> None:
    """a pick → 🪄 Vary (subtle) → a grid of variations → pick → 🖌 (a private copy with its cells) → B2 and a prompt in
    the form → the repainted picture; someone else's clicks on the pick and the variation are refused privately."""

    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, bot_data_dir, worker_db) as bot:
            await fake.send_user_message(fake.channel, fake.alice, '.imagine a pug on a sofa')
            status = await fake.wait_for_message(fake.channel)
            job_id = job_id_in(status)
            grid = await fake.wait_for_edit(status, is_grid, timeout=RESULT_TIMEOUT)
            await fake.click_button(grid, PICK.id(job_id, 0), fake.alice)
            picked = await fake.wait_for_message(fake.channel, lambda m: 'candidate 1 of job' in m.content)
            assert {VARY.id(job_id, 0, 'subtle'), VARY.id(job_id, 0, 'strong'), REPAINT.id(job_id, 0)} <= set(
                picked.custom_ids()
            )
            assert 'keeps the top three quarters and redraws the bottom quarter' in picked.content  # what it changes

            await fake.click_button(picked, VARY.id(job_id, 0, 'subtle'), fake.bob)
            assert 'belong to' in (await fake.wait_for_message(None, ephemeral=True)).content
            await fake.click_button(picked, VARY.id(job_id, 0, 'subtle'), fake.alice)
            varying = await fake.wait_for_message(fake.channel, lambda m: 'vary (subtle) of job' in m.content, timeout=10)
            vary_id = job_id_in(varying)
            variations = await fake.wait_for_edit(
                varying, lambda m: VARIATION.id(vary_id, 0) in m.custom_ids() and bool(m.attachments), timeout=RESULT_TIMEOUT
            )
            assert variations.custom_ids() == [VARIATION.id(vary_id, i) for i in range(9)] + [custom_ids.cancel(vary_id)]
            side = 3 * 256 + 2 * GAP
            assert image_size(variations.attachments[0].data) == (side, side)
            assert 'best first by CLIP' in variations.content and 'redraws the bottom quarter' in variations.content

            await fake.click_button(variations, VARIATION.id(vary_id, 0), fake.alice)
            variation = await fake.wait_for_message(fake.channel, lambda m: f'variation 1 of job #{vary_id}' in m.content)
            mine = [
                custom_ids.info(vary_id, 0),
                REPAINT.id(vary_id, 0),
                VARY.id(vary_id, 0, 'strong'),
                EXPAND.id(vary_id, 0, '16x9'),
            ]
            assert set(mine) <= set(variation.custom_ids()) and RATIOS.id(vary_id, 0) in variation.custom_ids()

            await fake.click_button(variation, REPAINT.id(vary_id, 0), fake.bob)
            assert 'belong to' in (await fake.wait_for_message(None, ephemeral=True)).content
            await fake.click_button(variation, REPAINT.id(vary_id, 0), fake.alice)
            chooser = await fake.wait_for_message(None, ephemeral=True)
            assert image_size(chooser.attachments[0].data) == (512, 512) and 'columns A–D, rows 1–4' in chooser.content
            assert chooser.custom_ids() == [CELLS.id(vary_id, 0)]
            opened = await fake.select(chooser, CELLS.id(vary_id, 0), ['B2'], fake.alice)
            await fake.wait_for_interaction_response(opened)
            assert opened.modal is not None and opened.modal['custom_id'].startswith(f'ed-repaint:{vary_id}:0:')
            await fake.submit_modal(opened, {'prompt': 'a party hat'})
            await fake.wait_for_message(
                None, lambda m: 'Repainting B2' in m.content, ephemeral=True, edited=True, timeout=10
            )
            repainting = await fake.wait_for_message(fake.channel, lambda m: 'repaint B2 of job' in m.content, timeout=10)
            repaint_id = job_id_in(repainting)

            def final(message: FakeMessage) -> bool:
                return 'failed' in message.content or custom_ids.info(repaint_id, 0) in message.custom_ids()

            done = await fake.wait_for_edit(repainting, final, timeout=RESULT_TIMEOUT)
            assert done.attachments and image_size(done.attachments[0].data) == (256, 256), done.content
            await fake.click_button(done, custom_ids.info(repaint_id, 0), fake.alice)
            info = await fake.wait_for_message(None, ephemeral=True)
            lineage = f'imagine #{job_id} → pick 1 → vary (subtle) #{vary_id} → pick 1 → repaint B2 #{repaint_id}'
            assert lineage in info.content and 'Best of 4 samples' in info.content

            # The typed forms: a region that covers everything is refused as text and as a slash command, and
            # nothing is queued or charged; `/vary` names the job and picture.
            before = await bot.store.quota(fake.guild.id, fake.alice.id)
            jobs = len(await bot.store.user_jobs(fake.alice.id, active_only=False, limit=50))
            await fake.send_user_message(fake.channel, fake.alice, '.repaint A1:D4 a new sofa', reply_to=variation)
            await fake.wait_for_message(fake.channel, lambda m: 'the whole picture' in m.content, timeout=10)
            await fake.invoke_slash('repaint', {'region': 'A1:D4', 'prompt': 'a new sofa', 'job': vary_id}, fake.alice)
            refusal = await fake.wait_for_message(None, ephemeral=True, edited=True, timeout=10)
            assert 'the whole picture' in refusal.content
            after = await bot.store.quota(fake.guild.id, fake.alice.id)
            assert (after.imagines_used, after.edits_used) == (before.imagines_used, before.edits_used)
            assert len(await bot.store.user_jobs(fake.alice.id, active_only=False, limit=50)) == jobs
            await fake.invoke_slash('vary', {'strength': 'strong', 'job': vary_id, 'picture': 2}, fake.alice)
            strong = await fake.wait_for_message(fake.channel, lambda m: 'vary (strong) of job' in m.content, timeout=10)
            strong_id = job_id_in(strong)
            await fake.wait_for_edit(strong, lambda m: VARIATION.id(strong_id, 0) in m.custom_ids(), timeout=RESULT_TIMEOUT)

        repainted = await read_job(worker_db, repaint_id)
        assert repainted.kind == 'repaint' and repainted.parent_job_id == vary_id and repainted.payload['region'] == 'B2'
        strongly = await read_job(worker_db, strong_id)
        assert (strongly.parent_job_id, strongly.parent_index, strongly.payload['strength']) == (vary_id, 1, 'strong')

    run(main(), TEST_TIMEOUT)
