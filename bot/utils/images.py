"""Getting a picture under a server's upload limit, and reading members' attachments.

Discord refuses files over the guild's limit (bots have been held to 8–10 MiB whatever the boost level,
discord-api-docs #6058 and #8572), with a 413 and no result for the member. A PNG that does not fit is
re-encoded as JPEG at falling quality, then scaled down, until it does; the caller tells the member.
Pillow runs in a thread so a big picture never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from pathlib import Path

import discord

DEFAULT_LIMIT = 10 * 1024 * 1024


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes
    reencoded: bool = False

    def file(self) -> discord.File:
        """A fresh `discord.File` (they are consumed by one request, so build one per attempt)."""
        return discord.File(io.BytesIO(self.data), filename=self.filename)


def _shrink(data: bytes, limit: int) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert('RGB')
    scale = 1.0
    while True:
        frame = (
            image if scale == 1.0 else image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))))
        )
        for quality in (90, 80, 70, 55, 40):
            buffer = io.BytesIO()
            frame.save(buffer, format='JPEG', quality=quality, optimize=True)
            if buffer.tell() <= limit:
                return buffer.getvalue()
        scale *= 0.7
        if frame.width <= 16 or frame.height <= 16:
            raise ValueError(f'cannot bring the picture under {limit} bytes')


def fit_bytes(data: bytes, filename: str, limit: int) -> Upload:
    if len(data) <= limit:
        return Upload(filename, data)
    return Upload(Path(filename).stem + '.jpg', _shrink(data, limit), reencoded=True)


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
