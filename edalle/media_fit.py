"""Encode a picture to fit an upload limit: PNG when it fits, else the best JPEG or WebP that does.

A ×4 upscale of a 512-px picture is 2048 × 2048: as PNG it can pass a server's upload limit
(10 MiB without boosts), and Discord answers an oversized file with a 413 and no result. So the
result goes out as PNG (lossless) when it fits; otherwise as the highest-quality lossy encoding
that fits, at full size; only if none does is it scaled down. The caller shows the note.

Pure Pillow, no torch: the bot imports this.
"""

from __future__ import annotations

import io
from typing import NamedTuple

from PIL import Image

# Tried in order until one fits. Full-chroma JPEG at 95 and 90 first: visually lossless, and
# a JPEG opens everywhere once saved. WebP is much smaller at like quality (on a sharpened
# 2048 × 2048 test picture: 0.48 MiB at 90 against JPEG's 1.14 MiB), so below that it is WebP
# only. Discord shows all of them inline.
LOSSY_LADDER: tuple[tuple[str, int], ...] = (
    ('JPEG', 95),
    ('JPEG', 90),
    ('WEBP', 90),
    ('WEBP', 80),
    ('WEBP', 70),
)
SHRINK_STEP = 0.8  # each side, per try, once even the last rung of the ladder does not fit
MIN_SIDE = 16  # below this the picture is useless: give up instead
SUFFIXES = {'PNG': '.png', 'JPEG': '.jpg', 'WEBP': '.webp'}


class Fitted(NamedTuple):
    data: bytes
    format: str  # 'PNG' | 'JPEG' | 'WEBP' (Pillow's names; `SUFFIXES` gives the file name's)
    note: str | None  # for the member, when the picture is not the lossless original


class DoesNotFit(ValueError):
    """Even a small, low-quality version of the picture is over the limit."""


def encode_to_fit(image: Image.Image, limit_bytes: int) -> Fitted:
    """The picture as PNG if that is at most `limit_bytes`, else the first lossy encoding that is.

    Lossy encodings try `LOSSY_LADDER` at full size, then again at 80 % of each side, and so on
    down to `MIN_SIDE`; `DoesNotFit` if nothing fits. The note says what was done and why, in
    one sentence for the member.
    """
    png = _encode(image, 'PNG', None)
    if len(png) <= limit_bytes:
        return Fitted(png, 'PNG', None)
    limit = _mib(limit_bytes)
    frame = image if image.mode == 'RGB' else image.convert('RGB')
    while True:
        for fmt, quality in LOSSY_LADDER:
            data = _encode(frame, fmt, quality)
            if len(data) <= limit_bytes:
                what = f'{_NAMES[fmt]} (quality {quality})'
                if frame.size == image.size:
                    note = f"Sent as {what} to fit this server's {limit} upload limit (the PNG is {_mib(len(png))})."
                else:
                    width, height = frame.size
                    note = (
                        f'Sent as {what} at {width}×{height} instead of {image.width}×{image.height} '
                        f"to fit this server's {limit} upload limit."
                    )
                return Fitted(data, fmt, note)
        width, height = (max(1, round(side * SHRINK_STEP)) for side in frame.size)
        if min(width, height) < MIN_SIDE:
            raise DoesNotFit(f'Even a small version of this picture is over the {limit} upload limit.')
        frame = frame.resize((width, height), Image.LANCZOS)


_NAMES = {'JPEG': 'JPEG', 'WEBP': 'WebP'}


def _encode(image: Image.Image, fmt: str, quality: int | None) -> bytes:
    buffer = io.BytesIO()
    if fmt == 'PNG':
        image.save(buffer, format='PNG')
    elif fmt == 'JPEG':
        # 4:4:4 chroma at high quality: 4:2:0 would blur the colour edges an upscale just sharpened.
        image.save(buffer, format='JPEG', quality=quality, subsampling=0 if quality >= 90 else 2, optimize=True)
    else:
        image.save(buffer, format='WEBP', quality=quality, method=4)
    return buffer.getvalue()


def _mib(size: int) -> str:
    """'10 MiB', '8.5 MiB', '512 KiB', '200 bytes': how Discord users read upload limits."""
    if size >= 1024 * 1024:
        return f'{size / (1024 * 1024):.1f}'.rstrip('0').rstrip('.') + ' MiB'
    if size >= 1024:
        return f'{round(size / 1024)} KiB'
    return f'{size} bytes'
