"""Fitting a picture under an upload limit: PNG when it fits, else the best lossy encoding that does."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edalle.media_fit import LOSSY_LADDER, SUFFIXES, DoesNotFit, encode_to_fit


def photo(side: int, seed: int = 0) -> Image.Image:
    """Smooth shapes plus fine grain: compresses like a photograph, neither like flat colour nor like pure noise."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (side // 16, side // 16, 3), dtype=np.uint8)).resize(
        (side, side), Image.BICUBIC
    )
    grain = rng.normal(0, 8, (side, side, 3))
    return Image.fromarray(np.clip(np.asarray(coarse) + grain, 0, 255).astype(np.uint8))


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        return opened.copy()


def format_of(data: bytes) -> str | None:
    with Image.open(io.BytesIO(data)) as opened:
        return opened.format


def test_a_picture_that_fits_goes_out_as_the_lossless_png() -> None:
    image = photo(128)
    fitted = encode_to_fit(image, 10 * 1024 * 1024)
    data, fmt, note = fitted  # a plain (bytes, format, note) tuple too
    assert fmt == 'PNG' and note is None and SUFFIXES[fmt] == '.png'
    assert decoded(data).tobytes() == image.tobytes()


def test_over_the_limit_it_is_the_first_lossy_encoding_that_fits_at_full_size() -> None:
    image = photo(512)
    png_size = len(encode_to_fit(image, 1 << 30).data)
    jpeg_95 = len(encode_to_fit(image, png_size - 1).data)  # PNG misses by a byte: the top rung fits
    fitted = encode_to_fit(image, png_size - 1)
    assert fitted.format == 'JPEG' and len(fitted.data) == jpeg_95 < png_size
    assert fitted.note is not None and 'JPEG (quality 95)' in fitted.note and 'upload limit' in fitted.note
    out = decoded(fitted.data)
    assert out.size == image.size and format_of(fitted.data) == 'JPEG'
    diff = np.abs(np.asarray(out, dtype=int) - np.asarray(image, dtype=int))
    assert diff.mean() < 4  # high quality: a few levels on average, on a grainy picture
    # Squeeze further: each rung is smaller than the one before, until WebP takes over.
    formats = []
    limit = len(fitted.data) - 1
    for _ in range(len(LOSSY_LADDER) - 1):
        fitted = encode_to_fit(image, limit)
        assert len(fitted.data) <= limit and decoded(fitted.data).size == image.size
        assert format_of(fitted.data) == fitted.format
        formats.append(fitted.format)
        limit = len(fitted.data) - 1
    assert formats == [fmt for fmt, _ in LOSSY_LADDER[1:]]
    assert 'WebP (quality 70)' in (fitted.note or '')


def test_when_no_quality_fits_the_picture_shrinks_and_the_note_says_so() -> None:
    image = photo(256)
    fitted = encode_to_fit(image, 4_000)
    out = decoded(fitted.data)
    assert len(fitted.data) <= 4_000 and out.width < 256 and out.width == out.height
    assert (fitted.note or '').startswith('Sent as ')
    assert (fitted.note or '').endswith(
        f"at {out.width}×{out.height} instead of 256×256 to fit this server's 4 KiB upload limit."
    )


def test_a_limit_nothing_can_meet_is_a_clear_error() -> None:
    with pytest.raises(DoesNotFit, match='over the 200 bytes upload limit'):
        encode_to_fit(photo(256), 200)


def test_transparency_is_kept_in_png_and_flattened_for_lossy() -> None:
    image = photo(64).convert('RGBA')
    assert decoded(encode_to_fit(image, 1 << 30).data).mode == 'RGBA'
    fitted = encode_to_fit(photo(256).convert('RGBA'), 60_000)
    assert fitted.format in ('JPEG', 'WEBP') and decoded(fitted.data).mode == 'RGB'
