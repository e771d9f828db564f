"""Where an expansion starts: a candidate of an imagine result, or any picture file.

A candidate brings its exact 16×16 token grid (the default method keeps those latents as
they are) and its prompt. A picture file is checked before it is decoded — byte size,
format, pixel count from the header — so a decompression bomb or a huge upload is refused
without allocating it; then EXIF rotation is applied and transparency is flattened onto white.
Then it is fitted: `fit_picture` keeps its aspect ratio (short side 256 px, long side at most
the canvas limit, both whole 16-px tokens), `fit_square` centre-crops it to 256×256 for callers
that want a square (`keep_aspect=False`, the loaders' default).
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from edalle.expander.errors import SourceError

if TYPE_CHECKING:
    import numpy as np

SOURCE_SIDE = 256  # DALL·E mini's picture size: 16 × 16 tokens of 16 px
TOKEN_PX = 16  # a source's sides are whole VQGAN tokens
MAX_SOURCE_PX = 1024  # a fitted picture's long side at most this: the expander's default canvas limit
MAX_FILE_BYTES = 25 * 1024 * 1024  # Discord's attachment limit for most servers
MAX_PIXELS = 40_000_000  # 40 MP decodes to ~120 MB of RGB; larger is refused before decoding
FORMATS = {'PNG': 'PNG', 'JPEG': 'JPEG', 'WEBP': 'WebP'}
MANIFEST_NAME = 'manifest.json'


@dataclass(frozen=True)
class Source:
    """An RGB picture in whole tokens (a candidate: 256×256), its VQGAN tokens if it was generated, what it came with."""

    image: Image.Image
    tokens: np.ndarray | None  # (16, 16) int codes, or None for a picture file
    prompt: str | None  # the imagine job's prompt, for a candidate
    preset: str | None  # the preset that drew it, when the manifest says
    origin: str  # for messages: 'candidate 2 of out/…/manifest.json' or the file name


def is_manifest(path: Path) -> bool:
    return path.is_dir() or path.suffix.lower() == '.json'


def load_source(path: Path, index: int = 1, *, keep_aspect: bool = False) -> Source:
    """A manifest (or its directory) and a 1-based candidate index, or a picture file (`load_image_file`)."""
    path = Path(path)
    if is_manifest(path):
        return load_candidate(path, index)
    return Source(load_image_file(path, keep_aspect=keep_aspect), None, None, None, path.name)


def load_candidate(manifest_path: Path, index: int) -> Source:
    import numpy as np  # here, not at the top: the bot checks members' pictures with this module and needs no numpy

    from edalle.outputs import read_candidate

    manifest_path = manifest_path / MANIFEST_NAME if manifest_path.is_dir() else manifest_path
    try:
        candidate = read_candidate(manifest_path, index)
        preset = json.loads(manifest_path.read_text()).get('preset')
    except FileNotFoundError as exc:
        raise SourceError(str(exc)) from None
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise SourceError(f'Cannot use {manifest_path}: {exc}') from None
    tokens = np.asarray(candidate.tokens)
    if tokens.shape != (SOURCE_SIDE // 16, SOURCE_SIDE // 16) or not np.issubdtype(tokens.dtype, np.integer):
        raise SourceError(f'Candidate {index} of {manifest_path} has no valid 16×16 token grid.')
    image = candidate.image
    if image.size != (SOURCE_SIDE, SOURCE_SIDE):
        raise SourceError(f'Candidate {index} of {manifest_path} is {image.width}×{image.height}, not 256×256.')
    origin = f'candidate {index} of {manifest_path}'
    return Source(image, tokens.astype(np.int64), candidate.prompt or None, preset, origin)


def load_image_file(path: Path, *, keep_aspect: bool = False, max_px: int = MAX_SOURCE_PX) -> Image.Image:
    """A PNG, JPEG or WebP file → RGB, with every limit checked before decoding; fitted as `load_image_bytes`."""
    image = open_image_file(path)
    return fit_picture(image, max_long_px=max_px) if keep_aspect else fit_square(image)


def open_image_file(path: Path) -> Image.Image:
    """A PNG, JPEG or WebP file → upright RGB at its own size, every limit checked before decoding (`open_image_bytes`)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f'No picture file at {path}.')
    _check_bytes(path.stat().st_size, path.name)
    return open_image_bytes(path.read_bytes(), path.name)


def load_image_bytes(
    data: bytes, name: str = 'the picture', *, keep_aspect: bool = False, max_px: int = MAX_SOURCE_PX
) -> Image.Image:
    """Bytes of a PNG, JPEG or WebP picture (e.g. a Discord attachment) → RGB.

    `keep_aspect`: its own shape (`fit_picture`: short side 256, long side at most `max_px`,
    whole tokens); otherwise the 256×256 centre square (`fit_square`).
    """
    image = open_image_bytes(data, name)
    return fit_picture(image, max_long_px=max_px) if keep_aspect else fit_square(image)


def open_image_bytes(data: bytes, name: str = 'the picture') -> Image.Image:
    """Bytes of a PNG, JPEG or WebP picture, checked (`load_image_bytes`'s limits) and decoded at its own size: upright
    RGB, transparency on white. For what takes any size (an upscale); the expander's sources are fitted."""
    _check_bytes(len(data), name)
    with warnings.catch_warnings():
        warnings.simplefilter('error', Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))  # reads the header only
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise SourceError(f'{name} is far too large in pixels; the limit is {MAX_PIXELS // 1_000_000} MP.') from None
        except Exception:
            raise SourceError(f'{name} is not a picture I can read; send a PNG, JPEG or WebP file.') from None
        if image.format not in FORMATS:
            raise SourceError(f'{name} is a {image.format or "unknown"} file; send a PNG, JPEG or WebP file.')
        width, height = image.size
        if width < 1 or height < 1 or width * height > MAX_PIXELS:
            raise SourceError(
                f'{name} is {width}×{height} pixels; the limit is {MAX_PIXELS // 1_000_000} MP. Send a smaller picture.'
            )
        try:
            image.seek(0)  # the first frame of an animation
            image.load()
        except Exception:
            raise SourceError(f'{name} is broken or truncated and cannot be decoded; send the file again.') from None
    return _upright_rgb(image)


def _check_bytes(size: int, name: str) -> None:
    if size == 0:
        raise SourceError(f'{name} is empty.')
    if size > MAX_FILE_BYTES:
        raise SourceError(f'{name} is {size / 2**20:.1f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB.')


def fit_square(image: Image.Image, side: int = SOURCE_SIDE) -> Image.Image:
    """EXIF-rotate, flatten transparency onto white, centre-crop to a square, resize (Lanczos) to side × side."""
    image = _upright_rgb(image)
    short = min(image.size)
    left, top = (image.width - short) // 2, (image.height - short) // 2
    image = image.crop((left, top, left + short, top + short))
    if image.size != (side, side):
        image = image.resize((side, side), Image.Resampling.LANCZOS)
    return image


def fit_picture(image: Image.Image, short_px: int = SOURCE_SIDE, max_long_px: int = MAX_SOURCE_PX) -> Image.Image:
    """EXIF-rotate, flatten transparency onto white, resize (Lanczos) keeping the aspect ratio, in whole tokens.

    The short side becomes `short_px` (256, a candidate's size) unless the long side would then
    pass `max_long_px` (the canvas limit: a fitted picture is always a canvas the expander
    accepts), in which case the long side is `max_long_px` and the short side shorter. Each
    side is rounded to whole 16-px tokens (at least one), so the shape moves by under 8 px.
    A picture already that size is returned as it is (RGB).
    """
    image = _upright_rgb(image)
    width, height = image.size
    scale = short_px / min(width, height)
    if max(width, height) * scale > max_long_px:
        scale = max_long_px / max(width, height)
    limit = max(1, max_long_px // TOKEN_PX)
    size = tuple(min(limit, max(1, round(side * scale / TOKEN_PX))) * TOKEN_PX for side in (width, height))
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def _upright_rgb(image: Image.Image) -> Image.Image:
    """EXIF rotation applied, transparency flattened onto white, RGB."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ('RGBA', 'LA', 'PA') or (image.mode == 'P' and 'transparency' in image.info):
        rgba = image.convert('RGBA')
        background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert('RGB')
