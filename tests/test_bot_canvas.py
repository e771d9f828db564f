"""Zoom, pan and dream end to end: the real bot against the local fake Discord, a real `tiny` worker (2 steps a job).

- pick → Zoom out 2× (the Zoom & pan… menu) → 512×512 → Pan right on the result → 768×512; past the admins'
  `max_canvas_px` the menu and `.pan` are refused naming the largest allowed, and nothing is queued or charged;
  🎨 Dream on the pick refines it;
- `.dream … --ar 2:1` → a 512×256 picture → 🎞️ → an animated GIF under the server's upload limit.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from discord_fake import FakeDiscord, FakeMessage, run, running_fake
from discord_fake.state import image_size
from PIL import Image, ImageSequence
from test_bot_e2e import edalle_bot, job_id_in, read_job
from tiny_worker import serving_tiny_worker

from bot.cogs.canvas import ZOOM_PAN
from bot.cogs.dream import DREAM
from bot.cogs.imagine import PICK
from bot.utils import custom_ids
from edalle.jobs import SqliteJobStore

pytestmark = pytest.mark.slow
RESULT_TIMEOUT = 180.0  # the first job waits for the worker to load the models
UPLOAD_LIMIT = 300_000  # bytes: a small server limit, so the time-lapse has to fit it


@pytest.fixture(scope='module')
def canvas_db(bot_data_dir: Path) -> Any:
    with serving_tiny_worker(bot_data_dir, bot_data_dir / 'canvas.db', expand_steps=2) as db:
        yield db


async def result_of(fake: FakeDiscord, channel: Any, words: str) -> tuple[FakeMessage, FakeMessage, int]:
    """The status message whose first line has `words`, and the result it became (with ℹ️ for its picture)."""
    status = await fake.wait_for_message(channel, lambda m: words in m.content, timeout=10)
    job_id = job_id_in(status)

    def final(message: FakeMessage) -> bool:
        return 'failed' in message.content or custom_ids.info(job_id, 0) in message.custom_ids()

    done = await fake.wait_for_edit(status, final, timeout=RESULT_TIMEOUT)
    assert done.attachments, done.content
    return status, done, job_id


async def set_limit(db: Path, guild_id: int, key: str, value: int) -> None:
    store = await SqliteJobStore.open(db)
    try:
        await store.set_setting(guild_id, key, value, actor_id=None, reason='tests')
    finally:
        await store.close()


def test_pick_zoom_out_then_pan_the_result_and_past_the_limit_a_refusal(
    canvas_db: Path, bot_data_dir: Path, discord_errors: Any, bot_errors: Any
) -> None:
    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, bot_data_dir, canvas_db) as bot:
            await fake.send_user_message(fake.channel, fake.alice, '.imagine a harbour at dawn')
            status = await fake.wait_for_message(fake.channel)
            grid_id = job_id_in(status)
            # progress edits may carry a preview picture; the grid is the edit with its pick buttons
            grid = await fake.wait_for_edit(status, lambda m: PICK.id(grid_id, 0) in m.custom_ids(), timeout=RESULT_TIMEOUT)
            await fake.click_button(grid, PICK.id(grid_id, 0), fake.alice)
            picked = await fake.wait_for_message(fake.channel, lambda m: 'candidate 1 of job' in m.content)
            assert ZOOM_PAN.id(grid_id, 0) in picked.custom_ids() and DREAM.id(grid_id, 0) in picked.custom_ids()

            await fake.select(picked, ZOOM_PAN.id(grid_id, 0), ['zoom 2'], fake.alice)
            status, zoomed, zoom_id = await result_of(fake, fake.channel, 'zoom out 2× of job')
            assert 'The run itself takes about' in status.history[0]['content']  # the estimate, before it ran
            assert image_size(zoomed.attachments[0].data) == (512, 512)
            assert custom_ids.timelapse(zoom_id) in zoomed.custom_ids()  # every optimising result has its time-lapse
            menu = next(c for c in zoomed.iter_components() if c.get('custom_id') == ZOOM_PAN.id(zoom_id, 0))
            assert 'square' not in [o['value'] for o in menu['options']]  # already square

            await fake.select(zoomed, ZOOM_PAN.id(zoom_id, 0), ['pan right'], fake.alice)
            _, panned, pan_id = await result_of(fake, fake.channel, 'pan right of job')
            assert image_size(panned.attachments[0].data) == (768, 512)
            menu = next(c for c in panned.iter_components() if c.get('custom_id') == ZOOM_PAN.id(pan_id, 0))
            assert menu['options'][-1]['value'] == 'square'  # not square: Make square is offered

            await fake.click_button(panned, custom_ids.info(pan_id, 0), fake.alice)
            info = await fake.wait_for_message(None, ephemeral=True)
            assert f'imagine #{grid_id} → pick 1 → zoom out 2× #{zoom_id} → pan right #{pan_id}' in info.content

            # Past the limit: the menu and `.pan` are refused naming the largest allowed; nothing queued or charged.
            await set_limit(canvas_db, fake.guild.id, 'max_canvas_px', 768)
            before = await bot.store.quota(fake.guild.id, fake.alice.id)
            jobs = len(await bot.store.user_jobs(fake.alice.id, active_only=False, limit=50))
            await fake.select(panned, ZOOM_PAN.id(pan_id, 0), ['pan right'], fake.alice)
            refusal = await fake.wait_for_message(None, ephemeral=True, timeout=10)
            assert 'would make a 1024×512 picture; the largest allowed is 768 px on the longest side' in refusal.content
            await fake.send_user_message(fake.channel, fake.alice, '.pan left a calm sea', reply_to=panned)
            answer = await fake.wait_for_message(fake.channel, timeout=10)
            assert 'would make a 1024×512 picture; the largest allowed is 768 px' in answer.content
            assert (await bot.store.quota(fake.guild.id, fake.alice.id)).edits_used == before.edits_used
            assert len(await bot.store.user_jobs(fake.alice.id, active_only=False, limit=50)) == jobs

            # 🎨 on the pick: the picture refined towards its own prompt.
            await fake.click_button(picked, DREAM.id(grid_id, 0), fake.alice)
            _, dreamed, dream_id = await result_of(fake, fake.channel, 'dream of “a harbour at dawn” from job')
            assert image_size(dreamed.attachments[0].data) == (256, 256)
            assert (await read_job(canvas_db, dream_id)).payload['init'] == 'refine'
            await set_limit(canvas_db, fake.guild.id, 'max_canvas_px', 1024)

            # The typed forms: `.zoom 1.5` as a reply, `/zoom` naming the job.
            await fake.send_user_message(fake.channel, fake.alice, '.zoom 1.5 a wider harbour', reply_to=picked)
            _, wider, _ = await result_of(fake, fake.channel, 'zoom out 1.5× of job')
            assert image_size(wider.attachments[0].data) == (384, 384)
            await fake.invoke_slash('zoom', {'factor': 1.5, 'job': grid_id, 'picture': 2}, fake.alice)
            _, sliced, slash_id = await result_of(fake, fake.channel, 'zoom out 1.5× of job')
            assert (await read_job(canvas_db, slash_id)).parent_index == 1 and image_size(sliced.attachments[0].data) == (
                384,
                384,
            )

    run(main(), 600)


def test_dream_then_its_time_lapse_under_the_upload_limit(
    canvas_db: Path, bot_data_dir: Path, discord_errors: Any, bot_errors: Any
) -> None:
    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, bot_data_dir, canvas_db, max_upload_bytes=UPLOAD_LIMIT):
            await fake.send_user_message(fake.channel, fake.bob, '.dream a red fox --ar 2:1 --stepz 3')
            answer = await fake.wait_for_message(fake.channel, timeout=10)
            assert 'I do not know `--stepz`' in answer.content  # a typo is named, never drawn

            await fake.send_user_message(
                fake.channel, fake.bob, '.dream a red fox in the snow --ar 2:1 --no text --init grey'
            )
            status, dreamed, dream_id = await result_of(fake, fake.channel, 'dream of “a red fox in the snow” · 2:1')
            assert image_size(dreamed.attachments[0].data) == (512, 256)
            job = await read_job(canvas_db, dream_id)
            assert job.payload['negative_prompt'] == 'text' and job.payload['steps'] == 2 and job.parent_job_id is None

            await fake.click_button(dreamed, custom_ids.timelapse(dream_id), fake.alice)  # not alice's: refused
            refusal = await fake.wait_for_message(None, ephemeral=True, timeout=10)
            assert 'belong to' in refusal.content
            await fake.click_button(dreamed, custom_ids.timelapse(dream_id), fake.bob)
            film = await fake.wait_for_message(fake.channel, lambda m: 'Time-lapse of job' in m.content, timeout=30)
            (attachment,) = film.attachments
            assert attachment.filename.endswith('.gif') and len(attachment.data) <= UPLOAD_LIMIT
            with Image.open(io.BytesIO(attachment.data)) as animation:
                frames = sum(1 for _ in ImageSequence.Iterator(animation))
                assert animation.format == 'GIF' and frames > 1  # animated

    run(main(), 400)
