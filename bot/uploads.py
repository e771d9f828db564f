"""A member's own picture to start from (expand, zoom, pan, dream …): download, check, normalize, store — before any
job exists.

The checks are the expander's own (`edalle.expander.sources`, Pillow only: no numpy, never torch), so
the bot refuses exactly what a worker would: a file over the size limit is refused from the size
Discord reports, before downloading; the rest (not a PNG/JPEG/WebP, a pixel count over the limit read
from the header, a decompression bomb, a broken or truncated file) before or while decoding, in a
thread so a big picture never blocks the event loop. What is kept is the picture in its own shape, as the
expander starts from it (`sources.fit_picture`: short side 256 px, long side at most 1024, whole 16-px
tokens; transparency flattened onto white), as a PNG of ~100–400 KB; for a vary or a repaint by tokens its
centre 256×256 square, for an upscale the picture at its own size (under the admins' `upscale_max_pixels`).
Workers then never see a member's raw file, and the job row holds only its path and size.

The PNG is written through the result store under `uploads/<hash of the request key>.png` (job id
`UPLOADS_JOB_ID`), so a worker on another host can fetch it; with the local store that is the data
dir itself. The name comes from the request key, so a command Discord delivers twice writes the same
file and `enqueue` returns the first job.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import discord

from bot.errors import NotAnImage
from edalle.expander.errors import SourceError
from edalle.expander.sources import MAX_FILE_BYTES, load_image_bytes, open_image_bytes
from edalle.jobs.store import UPLOADS_DIR, UPLOADS_JOB_ID

if TYPE_CHECKING:
    from bot.bot import EDalleBot

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 80  # the file name shown in status messages and ℹ️


def upload_path(request_key: str) -> str:
    """`uploads/<24 hex>.png`: stable per request (idempotent), and never a name a member chose."""
    digest = hashlib.sha256(request_key.encode()).hexdigest()[:24]
    return f'{UPLOADS_DIR}/{digest}.png'


def source_name(attachment: discord.Attachment) -> str:
    """The file name as the member sent it, cut to `MAX_NAME_CHARS` (kept in the job; escaped where shown)."""
    name = attachment.filename or 'image'
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1] + '…'


def _shown(name: str) -> str:
    return f'`{name.replace("`", "")}`'


@dataclass(frozen=True)
class StoredUpload:
    """A member's picture as stored: its path (relative to the data dir), the name it was sent with, its size."""

    path: str
    name: str
    width: int
    height: int


#: how a stored picture is fitted: the expander's shape (expand, zoom, pan, dream, repaint by CLIP), the centre
#: square of a candidate's size (vary, repaint by tokens), or its own size (upscale)
FITS = ('shape', 'square', 'size')


def normalize(data: bytes, name: str, *, fit: str = 'shape') -> tuple[bytes, tuple[int, int]]:
    """The expander's checks and fitting (`fit`, see `FITS`; RGB, alpha on white), as PNG bytes and the picture's
    (width, height); raises `NotAnImage`."""
    try:
        if fit == 'size':
            image = open_image_bytes(data, name)
        else:
            image = load_image_bytes(data, name, keep_aspect=fit == 'shape')
    except SourceError as exc:
        raise NotAnImage(str(exc)) from None
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return buffer.getvalue(), image.size


async def read_attachment(attachment: discord.Attachment) -> bytes:
    """The attachment's bytes; too big (by the size Discord reports) is refused before downloading."""
    name = _shown(source_name(attachment))
    if attachment.size > MAX_FILE_BYTES:
        raise NotAnImage(
            f'{name} is {attachment.size / 2**20:.1f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB. Send a smaller picture.'
        )
    if attachment.size == 0:
        raise NotAnImage(f'{name} is empty; send the picture again.')
    try:
        data = await attachment.read()
    except discord.HTTPException as exc:
        log.warning('could not download attachment %s: %s', attachment.id, exc)
        raise NotAnImage(f'I could not download {name} from Discord; send it again.') from None
    return data


async def store_upload(
    bot: EDalleBot, attachment: discord.Attachment, request_key: str, *, fit: str = 'shape'
) -> StoredUpload:
    """Download, check and store the member's picture (`fit`: see `normalize`)."""
    name = source_name(attachment)
    data = await read_attachment(attachment)
    png, (width, height) = await asyncio.to_thread(normalize, data, _shown(name), fit=fit)
    path = upload_path(request_key)
    await bot.results.put(UPLOADS_JOB_ID, path, png)
    return StoredUpload(path, name, width, height)


async def discard_upload(bot: EDalleBot, path: str) -> None:
    """Best effort: remove a stored picture whose job was refused (quota, cooldown…), so refusals leave nothing."""
    try:
        if bot.results.is_local:
            await asyncio.to_thread((Path(bot.settings.data_dir) / path).unlink, missing_ok=True)
        else:
            await bot.results.delete_job(UPLOADS_JOB_ID, prefix=path)
    except Exception as exc:  # an orphan ~100 KB file is harmless; the refusal still reaches the member
        log.warning('could not remove the refused upload %s: %s', path, exc)
