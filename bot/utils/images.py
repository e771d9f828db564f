"""Getting a picture under a server's upload limit, and reading members' attachments.

Discord refuses a file over the guild's limit with a 413 and no result for the member. The limit
is discord.py's `Guild.filesize_limit`: 10 MiB without boosts or at boost level 1 (the default
fell from 25 MiB to 10 MiB on 2025-01-16, discord-api-docs #7312), 50 MiB at level 2 and 100 MiB
at level 3; DMs get the default. A file over it is re-encoded by `edalle.media`: a still picture
as PNG if that fits, else JPEG at falling quality, then smaller; an animation keeps moving, with
fewer frames, then smaller ones. The caller tells the member (`Upload.note`). Pillow runs in a
thread so a big picture never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from pathlib import Path

import discord
from PIL import Image

from edalle.media import encode_to_fit, fit_animation, is_animated

DEFAULT_LIMIT = discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES  # 10 MiB since discord.py 2.5


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes
    reencoded: bool = False
    note: str | None = None  # for the member when re-encoded, e.g. "Re-encoded as JPEG to fit this server's upload limit."

    def file(self) -> discord.File:
        """A fresh `discord.File` (they are consumed by one request, so build one per attempt)."""
        return discord.File(io.BytesIO(self.data), filename=self.filename)


def fit_bytes(data: bytes, filename: str, limit: int) -> Upload:
    """`data` as it is when it fits, else re-encoded under `limit` (an animation stays animated)."""
    if len(data) <= limit:
        return Upload(filename, data)
    stem = Path(filename).stem
    if is_animated(data):
        animation = fit_animation(data, limit)
        return Upload(stem + animation.extension, animation.data, reencoded=True, note=animation.note)
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        encoded, extension, note = encode_to_fit(opened, limit, try_png=opened.format != 'PNG')
    return Upload(stem + extension, encoded, reencoded=True, note=note)


async def load_upload(path: Path, limit: int, filename: str | None = None) -> Upload:
    """Read `path` and fit it under `limit` bytes (re-encoded if needed)."""
    data = await asyncio.to_thread(path.read_bytes)
    if len(data) <= limit:
        return Upload(filename or path.name, data)
    return await asyncio.to_thread(fit_bytes, data, filename or path.name, limit)


def upload_limit(guild: discord.Guild | None, cap: int | None) -> int:
    """The smaller of the guild's limit (DMs: the default) and the configured cap."""
    limit = guild.filesize_limit if guild is not None else DEFAULT_LIMIT
    return min(limit, cap) if cap else limit


def looks_like_image(attachment: discord.Attachment) -> bool:
    content_type = (attachment.content_type or '').split(';')[0]
    return content_type.startswith('image/') or attachment.filename.lower().endswith(
        ('.png', '.jpg', '.jpeg', '.webp', '.gif')
    )
