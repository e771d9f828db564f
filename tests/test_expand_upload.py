"""`.expand` / `/expand` on a member's own picture: store, checks, refusals, and end to end with a real worker.

Four layers, cheapest first: the store contract for an expand without a parent (SQLite and a real
PostgreSQL); the bot's checks on the bytes (the expander's own limits, without torch); refusals through the
fake Discord (nothing queued, charged or left on disk); and the whole way with the `tiny` worker, an
attached PNG widened to 448×256 and posted once, by `.expand` and by `/expand`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import struct
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from discord_fake import FakeDiscord, FakeMessage, run, running_bot, running_fake
from discord_fake.state import image_size
from PIL import Image
from test_bot_e2e import every_next_step, job_id_in
from tiny_worker import serving_tiny_worker

from bot.bot import EDalleBot
from bot.cogs.vary import VARIATION
from bot.errors import NotAnImage
from bot.settings import Settings
from bot.uploads import normalize, upload_path
from bot.utils import custom_ids
from edalle import errors
from edalle.jobs import BOT_WIDE, JobRequest, JobStatus, SqliteJobStore, WorkerCaps
from edalle.jobs.postgres import PostgresJobStore
from edalle.operations import expand as expand_op

# ---- pictures ----------------------------------------------------------------------------------------------


def png(width: int = 256, height: int = 256, mode: str = 'RGB') -> bytes:
    rng = np.random.default_rng(width * 7 + height)
    channels = len(mode)
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels if channels > 1 else pixels[..., 0], mode).save(buffer, format='PNG')
    return buffer.getvalue()


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new('RGB', (width, height), (30, 120, 200)).save(buffer, format='JPEG', quality=85)
    return buffer.getvalue()


def bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG whose header declares width × height pixels (900 MP): only its few bytes exist."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

    header = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(b'\0' * 1024)) + chunk(b'IEND', b'')


def transparent_png() -> bytes:
    """Left half opaque red, right half fully transparent: flattening must turn the right half white."""
    image = Image.new('RGBA', (300, 300), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, 150, 300))
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return buffer.getvalue()


# ---- the store: an expand without a parent ----------------------------------------------------------------


def open_store(name: str, tmp_path: Path) -> Any:
    if name == 'sqlite':
        return SqliteJobStore.open(tmp_path / 'edalle.db')
    from pg_server import shared_server

    return PostgresJobStore.open(shared_server().create_database())


def upload_request(user_id: int = 1, source_path: str = 'uploads/abc123.png', **kwargs: Any) -> JobRequest:
    return expand_op.request(
        user_id=user_id, guild_id=10, channel_id=20, source_path=source_path, source_name='cat.png', preset='tiny', **kwargs
    )


@pytest.mark.parametrize('backend', ['sqlite', 'postgres'])
def test_an_expand_of_an_uploaded_picture_needs_no_parent_and_exactly_one_source(backend: str, tmp_path: Path) -> None:
    async def main() -> None:
        store = await open_store(backend, tmp_path)
        try:
            await store.set_limit(0, 'cooldown_seconds', 0, actor_id=None)
            admission = await store.enqueue(upload_request(ratio='16:9', steps=3, request_key='k1'))
            job = admission.job
            assert job.kind == 'expand' and job.parent_job_id is None and job.parent_index is None
            assert job.payload['source_path'] == 'uploads/abc123.png' and job.payload['source_name'] == 'cat.png'
            assert job.compat_key == 'expand:tiny'
            assert admission.quota.edits_used == 1  # charged as an expand
            assert (await store.enqueue(upload_request(request_key='k1'))).created is False

            both = JobRequest(**{**_fields(upload_request()), 'parent_job_id': job.id, 'parent_index': 0})
            bad_paths = ['../edalle.db', '/etc/passwd', 'uploads/../../x.png', 'uploads/a.txt', 'images/1/1/x.png', '']
            for request in [both, *[upload_request(source_path=path) for path in bad_paths]]:
                with pytest.raises(errors.InvalidParent):
                    await store.enqueue(request)
            neither = JobRequest(**{**_fields(upload_request()), 'payload': {'ratio': '16:9'}})
            with pytest.raises(errors.InvalidParent):
                await store.enqueue(neither)
            assert [j.id for j in await store.user_jobs(1, active_only=False)] == [job.id]  # nothing refused was written

            (claimed,) = await store.claim('w', WorkerCaps(('expand:tiny',), max_batch=4), 30.0)
            assert claimed.id == job.id
            await store.complete(claimed.lease, {'path': 'images/1/1/expanded.png', 'width': 448, 'height': 256}, 1.0)
            assert (await store.get(job.id)).status is JobStatus.SUCCEEDED
        finally:
            await store.close()

    asyncio.run(main())


def _fields(request: JobRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in JobRequest.__slots__}  # type: ignore[attr-defined]


# ---- the bot's checks on the bytes ------------------------------------------------------------------------


def test_pictures_keep_their_shape_in_whole_tokens_with_transparency_on_white() -> None:
    """Short side 256 px, long side at most 1024, both whole 16-px tokens (no longer cropped to a square)."""
    cases = [(png(640, 480), (336, 256)), (jpeg(301, 173), (448, 256)), (png(100, 100, 'RGBA'), (256, 256))]
    cases += [(jpeg(4000, 500), (1024, 128)), (transparent_png(), (256, 256))]
    for data, size in cases:
        png_bytes, reported = normalize(data, 'x')
        with Image.open(io.BytesIO(png_bytes)) as image:
            assert (image.format, image.mode, image.size, reported) == ('PNG', 'RGB', size, size)
    with Image.open(io.BytesIO(normalize(transparent_png(), 'x')[0])) as image:
        assert image.getpixel((10, 128)) == (255, 0, 0) and image.getpixel((245, 128)) == (255, 255, 255)
    # a vary or a repaint by tokens takes the centre square; an upscale the picture at its own size
    assert normalize(jpeg(301, 173), 'x', fit='square')[1] == (256, 256)
    assert normalize(jpeg(301, 173), 'x', fit='size')[1] == (301, 173)


@pytest.mark.parametrize(
    ('data', 'words'),
    [
        (b'just some notes\n' * 10, 'not a picture I can read; send a PNG, JPEG or WebP'),
        (png()[:2000], 'broken or truncated'),
        (bomb(), 'MP'),
        (bomb(9000, 9000), 'MP'),  # 81 MP: under Pillow's bomb limit, over the expander's 40 MP
        (b'', 'empty'),
    ],
    ids=['text', 'truncated', 'bomb', 'too-many-pixels', 'empty'],
)
def test_unusable_files_are_refused_in_words_before_decoding(data: bytes, words: str) -> None:
    with pytest.raises(NotAnImage) as caught:
        normalize(data, '`f`')
    assert words in str(caught.value)


def test_upload_names_come_from_the_request_key_not_the_member() -> None:
    assert upload_path('m:1') == upload_path('m:1') != upload_path('m:2')
    assert upload_path('../../etc/passwd').startswith('uploads/') and upload_path('x').endswith('.png')


def test_the_bot_checks_pictures_without_torch_or_jax() -> None:
    code = (
        'import sys, bot.uploads, bot.cogs.expand; print(",".join(m for m in ("torch", "jax", "flax") if m in sys.modules))'
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ''


# ---- refusals through the fake Discord (no worker) -------------------------------------------------------

FAST = dict(preset='tiny', run_worker=False, sync_commands='always', guild_ready_timeout=0.05)


@contextlib.asynccontextmanager
async def refusing_bot(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[EDalleBot]:
    store = await SqliteJobStore.open(tmp_path / 'edalle.db')
    await store.set_setting(BOT_WIDE, 'cooldown_seconds', 0, actor_id=None, reason='tests')
    settings = Settings(token=fake.token, data_dir=tmp_path, api_base=fake.api_base, gateway_url=fake.gateway_url, **FAST)
    bot = EDalleBot(settings=settings, store=store)
    try:
        async with running_bot(bot, fake, timeout=15):
            yield bot
    finally:
        await store.close()


def test_unusable_attachments_are_refused_and_nothing_is_queued_charged_or_kept(
    tmp_path: Path, discord_errors: Any, bot_errors: Any
) -> None:
    async def main() -> None:
        async with running_fake() as fake, refusing_bot(fake, tmp_path) as bot:

            async def expand(files: list[tuple[str, bytes, str]], text: str = '.expand 16:9', **kw: Any) -> str:
                await fake.send_user_message(fake.channel, fake.alice, text, attachments=files, **kw)
                return (await fake.wait_for_message(fake.channel)).content

            answer = await expand([('notes.txt', b'hello, not a picture\n', 'text/plain')])
            assert '`notes.txt` is not a picture I can read; send a PNG, JPEG or WebP file.' in answer
            answer = await expand([('cut.png', png()[:3000], 'image/png')])
            assert '`cut.png` is broken or truncated' in answer and 'send the file again' in answer
            answer = await expand([('bomb.png', bomb(), 'image/png')])
            assert '`bomb.png` is far too large in pixels' in answer and '40 MP' in answer
            answer = await expand([('huge.png', b'\0' * (25 * 2**20 + 1), 'image/png')])  # refused from its size
            assert '`huge.png` is 25.0 MB; the limit is 25 MB' in answer

            # A reply to a member's message that carries the bad file: the same words.
            post = await fake.send_user_message(fake.channel, fake.bob, 'look', attachments=[('cut.png', png()[:3000])])
            answer = await expand([], '.expand', reply_to=post)
            assert '`cut.png` is broken or truncated' in answer

            await fake.invoke_slash('expand', {'image': ('bomb.png', bomb(), 'image/png')}, fake.alice)
            await fake.wait_for_message(None, lambda m: 'far too large in pixels' in m.content, ephemeral=True, edited=True)

            # A good picture refused by the store (no expands left today): the stored copy is removed again.
            await bot.store.set_setting(BOT_WIDE, 'daily_expands', 0, actor_id=None, reason='tests')
            answer = await expand([('fine.png', png(), 'image/png')])
            assert "today's edit jobs" in answer

            assert await bot.store.user_jobs(fake.alice.id, active_only=False) == []
            assert (await bot.store.quota(fake.guild.id, fake.alice.id)).edits_used == 0
            uploads = tmp_path / 'uploads'
            assert not uploads.exists() or not any(uploads.iterdir())

    run(main(), 60)


# ---- end to end with the tiny worker ---------------------------------------------------------------------

RESULT_TIMEOUT = 150.0  # the first job waits for the worker to load the models
E2E = dict(
    preset='tiny',
    run_worker=False,
    sync_commands='always',
    guild_ready_timeout=0.05,
    progress_seconds=0.5,
    preview_seconds=0.5,
    delivery_lease_seconds=5.0,
)


@pytest.fixture(scope='module')
def upload_worker_db(bot_data_dir: Path) -> Iterator[Path]:
    """A database with a tiny worker serving it; 2 expand steps keep each job to seconds."""
    with serving_tiny_worker(bot_data_dir, bot_data_dir / 'expand-upload.db', expand_steps=2) as db:
        yield db


async def widened(fake: FakeDiscord, status: FakeMessage) -> tuple[FakeMessage, int]:
    expand_id = job_id_in(status)  # the job's own number (its first line may name the job it starts from)

    def final(message: FakeMessage) -> bool:
        return 'failed' in message.content or custom_ids.info(expand_id, 0) in message.custom_ids()

    done = await fake.wait_for_edit(status, final, timeout=RESULT_TIMEOUT)
    assert done.custom_ids() == every_next_step(expand_id, timelapse=True), done.content
    return done, expand_id


@pytest.mark.slow
def test_attached_pictures_are_widened_by_text_and_slash_commands(
    upload_worker_db: Path, bot_data_dir: Path, discord_errors: Any, bot_errors: Any
) -> None:
    """`.expand 16:9` with an RGBA PNG attached, `/expand` with an odd-sized JPEG: each widened, posted once; `.upscale`
    with a small JPEG attached: ×4 at its own size; `.vary` and `.repaint` of an attached photo: its centre square."""

    async def main() -> None:
        store = await SqliteJobStore.open(upload_worker_db)
        async with running_fake() as fake:
            settings = Settings(
                token=fake.token,
                data_dir=bot_data_dir,
                db_path=upload_worker_db,
                api_base=fake.api_base,
                gateway_url=fake.gateway_url,
                **E2E,
            )
            bot = EDalleBot(settings=settings, store=store)
            try:
                async with running_bot(bot, fake, timeout=15):
                    await fake.send_user_message(
                        fake.channel,
                        fake.alice,
                        '.expand 16:9',
                        attachments=[('sunset.png', transparent_png(), 'image/png')],
                    )
                    status = await fake.wait_for_message(fake.channel, lambda m: 'expand to 16:9' in m.content, timeout=10)
                    assert '“sunset.png”' in status.content
                    done, first_id = await widened(fake, status)
                    assert image_size(done.attachments[0].data) == (448, 256)

                    record = await fake.invoke_slash(
                        'expand', {'ratio': '9:16', 'image': ('photo.jpg', jpeg(301, 297), 'image/jpeg')}, fake.bob
                    )
                    note = await fake.wait_for_message(None, ephemeral=True, edited=True, timeout=10)
                    assert 'Expanding `photo.jpg` to 9:16' in note.content
                    status = await fake.wait_for_message(fake.channel, lambda m: 'expand to 9:16' in m.content, timeout=10)
                    done, second_id = await widened(fake, status)
                    assert image_size(done.attachments[0].data) == (256, 448)
                    assert record is not None

                    # ℹ️ on the widened picture names the upload.
                    await fake.click_button(done, custom_ids.info(second_id, 0), fake.bob)
                    info = await fake.wait_for_message(None, ephemeral=True)
                    assert 'Expanded your image “photo.jpg” to 9:16' in info.content

                    # A reply to a member's message with a picture; then a reply to the widened picture, which widens
                    # that very picture (it once meant the upload again: any picture is a source now, in its shape).
                    post = await fake.send_user_message(fake.channel, fake.bob, 'my cat', attachments=[('cat.png', png())])
                    await fake.send_user_message(fake.channel, fake.bob, '.expand 2:1', reply_to=post)
                    status = await fake.wait_for_message(fake.channel, lambda m: 'expand to 2:1' in m.content, timeout=10)
                    assert '“cat.png”' in status.content
                    wide, _ = await widened(fake, status)
                    assert image_size(wide.attachments[0].data) == (512, 256)
                    await fake.send_user_message(fake.channel, fake.bob, '.expand 1:1', reply_to=done)
                    status = await fake.wait_for_message(fake.channel, lambda m: 'expand to 1:1' in m.content, timeout=10)
                    assert f'job #{second_id}' in status.content
                    again, third_id = await widened(fake, status)
                    assert image_size(again.attachments[0].data) == (448, 448)  # the 256×448 picture, widened

                    # An upscale takes a member's picture at its own size (not fitted to 256 px like the above).
                    await fake.send_user_message(
                        fake.channel, fake.alice, '.upscale', attachments=[('small.jpg', jpeg(120, 90), 'image/jpeg')]
                    )
                    status = await fake.wait_for_message(fake.channel, lambda m: 'upscale ×4 of your image' in m.content)
                    assert '“small.jpg”' in status.content
                    upscale_id = job_id_in(status)
                    big = await fake.wait_for_edit(
                        status, lambda m: custom_ids.info(upscale_id, 0) in m.custom_ids(), timeout=RESULT_TIMEOUT
                    )
                    assert image_size(big.attachments[0].data) == (480, 360)

                    # A vary takes a member's picture's centre square and needs words for it; a repaint by tokens too.
                    photo = [('fox.jpg', jpeg(300, 200), 'image/jpeg')]
                    await fake.send_user_message(fake.channel, fake.bob, '.vary strong', attachments=photo)
                    await fake.wait_for_message(fake.channel, lambda m: 'it has no prompt' in m.content)
                    await fake.send_user_message(fake.channel, fake.bob, '.vary strong a red fox', attachments=photo)
                    status = await fake.wait_for_message(fake.channel, lambda m: 'vary (strong) of your image' in m.content)
                    vary_id = job_id_in(status)
                    grid = await fake.wait_for_edit(
                        status, lambda m: VARIATION.id(vary_id, 0) in m.custom_ids(), timeout=RESULT_TIMEOUT
                    )
                    assert grid.attachments
                    await fake.send_user_message(fake.channel, fake.bob, '.repaint B2 a blue hat', attachments=photo)
                    status = await fake.wait_for_message(fake.channel, lambda m: 'repaint B2 of your image' in m.content)
                    repaint_id = job_id_in(status)
                    painted = await fake.wait_for_edit(
                        status, lambda m: custom_ids.info(repaint_id, 0) in m.custom_ids(), timeout=RESULT_TIMEOUT
                    )
                    assert image_size(painted.attachments[0].data) == (256, 256)
                    await asyncio.sleep(1.0)  # a few courier rounds: nothing posted twice
            finally:
                await store.close()

        for job_id in (first_id, second_id):
            job = await store_get(upload_worker_db, job_id)
            assert job.status is JobStatus.SUCCEEDED and job.delivered_at is not None and job.parent_job_id is None
            assert (bot_data_dir / job.payload['source_path']).is_file()
        third = await store_get(upload_worker_db, third_id)
        assert (third.parent_job_id, third.parent_index, third.payload.get('source_path')) == (second_id, 0, None)
        pictures = [m for m in fake.bot_messages(fake.channel) if m.attachments]
        assert len(pictures) == 7
        for job_id, size in ((upscale_id, (120, 90)), (vary_id, (256, 256)), (repaint_id, (256, 256))):
            job = await store_get(upload_worker_db, job_id)
            assert job.status is JobStatus.SUCCEEDED and job.parent_job_id is None
            with Image.open(bot_data_dir / job.payload['source_path']) as stored:
                assert stored.size == size  # an upscale's at its own size; the others' centre square

    run(main(), 300)


async def store_get(db: Path, job_id: int) -> Any:
    store = await SqliteJobStore.open(db)
    try:
        return await store.get(job_id)
    finally:
        await store.close()
