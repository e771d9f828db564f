"""Pictures and animations that fit a byte limit (a Discord server's upload limit), with Pillow alone.

Both processes use this module: the worker writes a time-lapse next to a result, and the bot
shrinks a file that is over a server's limit before sending it. So it imports Pillow and nothing
heavy (no numpy, torch or jax): frames given as uint8 arrays go through `Image.fromarray`, which
needs only the array interface.

An animation (`write_timelapse`, `fit_animation`) shrinks in a fixed order until it fits:

1. fewer frames, chosen evenly, always keeping the first and the last (the final picture), down
   to `ShrinkPolicy.min_frames`: a time-lapse with a few dozen frames still reads as one;
2. smaller frames, down to `ShrinkPolicy.min_side` pixels on the short side;
3. fewer frames again, down to two: the first and the final picture.

If two frames at the smallest size do not fit, `MediaTooLarge` says so. Every step is a function
of the frames and the limit alone, so the same input gives the same bytes (with the same Pillow
and libwebp builds).

What "the last frame is the final picture" can mean in each format:

- GIF holds at most 256 colours a frame. The final frame is quantised alone with its own
  adaptive palette (`gif_final_frame`: median cut, no dithering), so it decodes to exactly
  `gif_final_frame(final).convert('RGB')`. The other frames use the much faster octree quantiser
  (`gif_frame`): each is on screen for a fraction of a second, the final one for 1.5 s.
- WebP, lossless (`ShrinkPolicy(webp_quality=None)`): every frame decodes to its input pixels.
- WebP, lossy (the default for WebP): close but not equal; libwebp may also fold a frame into the
  one before it when they differ by less than its tolerance for that quality.

Encoders fold a frame that repeats the one before it into that frame (its time is added), so
the frames and times an `Animation` reports are read back from the file, never assumed. When
frames are scaled down, "the final picture" means the final picture at the new size
(`Image.resize` with Lanczos filtering).

GIF is the default format because every Discord client animates a GIF attachment; animated WebP
attachments are animated by the desktop client since late 2024 (discord/lilliput#159) but were
not everywhere, so WebP is opt-in (`formats=('gif', 'webp')` takes WebP only where GIF would have
to shrink more).
"""

from __future__ import annotations

import bisect
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, ImageSequence

from edalle.errors import EdalleError

if TYPE_CHECKING:
    import numpy as np

    Frame = Image.Image | np.ndarray

ANIMATED_FORMATS = ('gif', 'webp')
GIF_COLOURS = 255  # one palette index stays free, so pixels a frame leaves unchanged can be written as transparent
GIF_MIN_FRAME_MS = 20  # browsers show shorter GIF delays as 100 ms
STILL_QUALITIES = (95, 90, 85, 80, 75, 70, 60)  # JPEG / WebP qualities tried, best first, before scaling down
STILL_MIN_SIDE = 16
SHRINK_MARGIN = 0.9  # aim a little under the limit when estimating the next step from a measured size


class MediaTooLarge(EdalleError):
    """This picture can't be made small enough for this server's upload limit."""


# -- configuration ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelapseTiming:
    """How long each frame of a time-lapse shows.

    The frames before the final picture share `progression_ms` (each between `min_frame_ms` and
    `max_frame_ms`, in 10 ms steps because GIF counts time in centiseconds); the final picture
    then stays for `final_hold_ms`, so the end result is what the eye rests on.
    """

    progression_ms: int = 4000
    final_hold_ms: int = 1500
    min_frame_ms: int = 40
    max_frame_ms: int = 500

    @property
    def max_frames(self) -> int:
        """Frames beyond this would each show for less than `min_frame_ms`: they are dropped evenly."""
        return self.progression_ms // self.min_frame_ms + 1

    def durations(self, count: int) -> tuple[int, ...]:
        """Milliseconds for `count` frames, the last being the final picture."""
        if count < 2:
            raise ValueError('a time-lapse needs at least two frames')
        step = round(self.progression_ms / (count - 1) / 10) * 10
        step = min(self.max_frame_ms, max(self.min_frame_ms, step))
        return (step,) * (count - 1) + (self.final_hold_ms,)


@dataclass(frozen=True)
class ShrinkPolicy:
    """How far an animation may shrink before `MediaTooLarge`, and how WebP frames are encoded."""

    min_frames: int = 16  # frames kept before the frames are made smaller
    min_side: int = 64  # pixels on the short side before frames drop below `min_frames`
    webp_quality: int | None = 80  # lossy WebP quality 0-100; None writes lossless WebP


@dataclass(frozen=True)
class Animation:
    """An encoded animation and what is in it, as read back from the file."""

    data: bytes
    format: str  # 'gif' or 'webp'
    size: tuple[int, int]  # (width, height) of every frame
    durations_ms: tuple[int, ...]  # one per frame in the file; the last is the final picture's hold
    source_frames: tuple[int, ...]  # the input frame each file frame shows (the first, when later ones were folded in)
    source_count: int  # frames given
    source_size: tuple[int, int]
    shrunk: bool  # frames were dropped or scaled down to fit the limit

    @property
    def frame_count(self) -> int:
        return len(self.durations_ms)

    @property
    def extension(self) -> str:
        return '.' + self.format

    @property
    def mime_type(self) -> str:
        return 'image/' + self.format

    @property
    def note(self) -> str | None:
        """A line for the member when the animation had to shrink to fit, else None."""
        if not self.shrunk:
            return None
        parts = []
        if self.frame_count < self.source_count:
            parts.append(f'{self.frame_count} of {self.source_count} frames')
        if self.size != self.source_size:
            parts.append(f'{self.size[0]}×{self.size[1]} (from {self.source_size[0]}×{self.source_size[1]})')
        return f"Sent with {' at '.join(parts)} to fit this server's upload limit."


# -- time-lapses and animated files -------------------------------------------------------------------------

FRAMES_PER_RUN = 80  # what a recorded optimisation aims at: under `TimelapseTiming().max_frames`, so none is dropped


def frame_interval(steps: int, frames: int = FRAMES_PER_RUN) -> int:
    """k, the steps between two recorded frames of a `steps`-step run: ⌈steps / k⌉ + 1 frames, at most about `frames`
    (51 for 100 steps, 68 for 200, every step of a short run)."""
    return max(1, math.ceil(max(1, steps) / frames))


def write_timelapse(
    frames: Sequence[Frame],
    limit_bytes: int,
    *,
    formats: Sequence[str] = ('gif',),
    timing: TimelapseTiming = TimelapseTiming(),
    policy: ShrinkPolicy = ShrinkPolicy(),
) -> Animation:
    """Encode `frames` (oldest first, the last one the final picture) as an animation of at most `limit_bytes`.

    Frames are PIL images or uint8 arrays shaped (H, W, 3), (H, W, 4) or (H, W), all the same size;
    alpha is dropped. More than `timing.max_frames` frames are thinned evenly first, so the
    animation lasts about `timing.progression_ms + timing.final_hold_ms`. `formats` are tried in
    order at each step; the first that fits wins. Raises `MediaTooLarge` when even two frames at
    `policy.min_side` pixels do not fit.
    """
    images = _as_rgb_frames(frames)
    return _shrink_to_fit(
        images,
        lambda kept: timing.durations(len(kept)),
        limit_bytes,
        _check_formats(formats),
        policy,
        max_frames=max(2, timing.max_frames),
    )


def fit_animation(
    data: bytes, limit_bytes: int, *, formats: Sequence[str] | None = None, policy: ShrinkPolicy = ShrinkPolicy()
) -> Animation:
    """Re-encode an animated GIF / WebP / APNG to at most `limit_bytes`, keeping it animated.

    A dropped frame's time goes to the kept frame before it, so the animation lasts as long as
    before. `formats` defaults to the file's own format (GIF for anything else).
    """
    with Image.open(io.BytesIO(data)) as opened:
        source_format = (opened.format or '').lower()
        images, durations = [], []
        for frame in ImageSequence.Iterator(opened):
            images.append(frame.convert('RGB'))
            durations.append(_duration(frame))
    if len(images) < 2:
        raise ValueError('fit_animation needs an animated file (it has one frame)')
    if formats is None:
        formats = (source_format,) if source_format in ANIMATED_FORMATS else ('gif',)

    def folded(kept: Sequence[int]) -> tuple[int, ...]:
        ends = [*kept[1:], len(durations)]
        return tuple(sum(durations[start:end]) for start, end in zip(kept, ends, strict=True))

    return _shrink_to_fit(images, folded, limit_bytes, _check_formats(formats), policy, max_frames=len(images))


def is_animated(data: bytes) -> bool:
    """Whether `data` is an image file with more than one frame (GIF, WebP, APNG)."""
    with Image.open(io.BytesIO(data)) as opened:
        return bool(getattr(opened, 'is_animated', False))


def gif_frame(image: Image.Image) -> Image.Image:
    """How a frame before the final picture is quantised for GIF: fast octree, 255 colours, no dithering."""
    return image.convert('RGB').quantize(GIF_COLOURS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)


def gif_final_frame(image: Image.Image) -> Image.Image:
    """How the final picture is quantised for GIF: its own median-cut palette of 255 colours, no dithering."""
    return image.convert('RGB').quantize(GIF_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def even_indices(count: int, keep: int) -> tuple[int, ...]:
    """`keep` of the indices 0 … count-1, evenly spaced, always the first and the last."""
    if keep >= count:
        return tuple(range(count))
    if keep < 2:
        raise ValueError('keep at least the first and the last frame')
    gaps = keep - 1
    return tuple((i * (count - 1) + gaps // 2) // gaps for i in range(keep))


def _as_rgb_frames(frames: Sequence[Frame]) -> list[Image.Image]:
    if len(frames) < 2:
        raise ValueError(f'a time-lapse needs at least two frames, got {len(frames)}')
    images = []
    for frame in frames:
        if not isinstance(frame, Image.Image):
            if str(getattr(frame, 'dtype', '')) != 'uint8':
                raise ValueError(f'frames must be PIL images or uint8 arrays, got {type(frame).__name__}')
            frame = Image.fromarray(frame)
        images.append(frame.convert('RGB'))
    if len({image.size for image in images}) != 1:
        raise ValueError(f'frames differ in size: {sorted({image.size for image in images})}')
    return images


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    checked = tuple(f.lower().lstrip('.') for f in formats)
    if not checked or any(f not in ANIMATED_FORMATS for f in checked):
        raise ValueError(f'formats must be some of {ANIMATED_FORMATS}, got {tuple(formats)}')
    return checked


class _Scaled:
    """The source frames at one size, resized and quantised on first use (a size is tried several times)."""

    def __init__(self, frames: list[Image.Image], size: tuple[int, int]) -> None:
        self.frames = frames
        self.size = size
        self._rgb: dict[int, Image.Image] = {}
        self._gif: dict[int, Image.Image] = {}

    def rgb(self, index: int) -> Image.Image:
        if index not in self._rgb:
            frame = self.frames[index]
            self._rgb[index] = frame if frame.size == self.size else frame.resize(self.size, Image.Resampling.LANCZOS)
        return self._rgb[index]

    def gif(self, index: int) -> Image.Image:
        if index not in self._gif:
            final = index == len(self.frames) - 1
            self._gif[index] = (gif_final_frame if final else gif_frame)(self.rgb(index))
        return self._gif[index]


def _shrink_to_fit(
    frames: list[Image.Image],
    durations_for: Callable[[Sequence[int]], tuple[int, ...]],
    limit_bytes: int,
    formats: tuple[str, ...],
    policy: ShrinkPolicy,
    *,
    max_frames: int,
) -> Animation:
    """Walk the ladder in the module docstring: fewer frames, smaller frames, fewer frames again."""
    if limit_bytes <= 0:
        raise ValueError(f'limit_bytes must be positive, got {limit_bytes}')
    source_size = frames[0].size
    smallest = _smallest_size(source_size, policy.min_side)
    keep = min(len(frames), max_frames)
    first_floor = min(keep, max(2, policy.min_frames))
    scaled = _Scaled(frames, source_size)
    first_try = True
    while True:
        kept = even_indices(len(frames), keep)
        durations = durations_for(kept)
        sizes = []
        for format_ in formats:
            data = _encode(format_, scaled, kept, durations, policy)
            if len(data) <= limit_bytes:
                return _read_back(data, format_, kept, durations, len(frames), source_size, shrunk=not first_try)
            sizes.append(len(data))
        first_try = False
        ratio = limit_bytes / min(sizes)
        if keep > first_floor:
            keep = _fewer(keep, ratio, first_floor)
        elif scaled.size != smallest:
            scaled = _Scaled(frames, _smaller(scaled.size, ratio, smallest))
        elif keep > 2:
            keep = _fewer(keep, ratio, 2)
        else:
            raise MediaTooLarge(
                f"This animation can't fit this server's upload limit ({_amount(limit_bytes)}): even two frames at "
                f'{scaled.size[0]}×{scaled.size[1]} take {_amount(min(sizes))}.'
            )


def _fewer(keep: int, ratio: float, floor: int) -> int:
    """The next frame count: as many as the measured size suggests will fit, at least one fewer."""
    estimate = 1 + int((keep - 1) * ratio * SHRINK_MARGIN)
    return max(floor, min(keep - 1, estimate))


def _smaller(size: tuple[int, int], ratio: float, smallest: tuple[int, int]) -> tuple[int, int]:
    """The next frame size: bytes go roughly with area, so scale sides by √ratio (between 0.5× and 0.9×)."""
    factor = min(0.9, max(0.5, math.sqrt(ratio * SHRINK_MARGIN)))
    width, height = max(1, round(size[0] * factor)), max(1, round(size[1] * factor))
    if min(width, height) <= min(smallest) or (width, height) == size:
        return smallest
    return width, height


def _smallest_size(size: tuple[int, int], min_side: int) -> tuple[int, int]:
    short = min(size)
    if short <= min_side:
        return size
    return max(1, round(size[0] * min_side / short)), max(1, round(size[1] * min_side / short))


def _encode(format_: str, scaled: _Scaled, kept: Sequence[int], durations: Sequence[int], policy: ShrinkPolicy) -> bytes:
    buffer = io.BytesIO()
    if format_ == 'gif':
        images = [scaled.gif(i) for i in kept]
        images[0].save(
            buffer,
            format='GIF',
            save_all=True,
            append_images=images[1:],
            duration=list(_gif_durations(durations)),
            loop=0,
            optimize=True,
        )
    else:
        images = [scaled.rgb(i) for i in kept]
        lossless = policy.webp_quality is None
        images[0].save(
            buffer,
            format='WEBP',
            save_all=True,
            append_images=images[1:],
            duration=list(durations),
            loop=0,
            lossless=lossless,
            quality=50 if lossless else policy.webp_quality,  # for lossless, quality is the effort spent
            method=4,
        )
    return buffer.getvalue()


def _duration(frame: Image.Image) -> int:
    """A frame's time in ms (the WebP reader sets it only once the frame is loaded)."""
    frame.load()
    return int(frame.info.get('duration') or 0)


def _gif_durations(durations: Sequence[int]) -> tuple[int, ...]:
    """GIF delays are whole centiseconds, and delays under 20 ms are shown as 100 ms."""
    return tuple(max(GIF_MIN_FRAME_MS, round(d / 10) * 10) for d in durations)


def _read_back(
    data: bytes,
    format_: str,
    kept: Sequence[int],
    durations: Sequence[int],
    source_count: int,
    source_size: tuple[int, int],
    *,
    shrunk: bool,
) -> Animation:
    """What the file holds: encoders fold repeated frames into the one before, adding their times."""
    written = _gif_durations(durations) if format_ == 'gif' else tuple(durations)
    starts, start = [], 0
    for duration in written:
        starts.append(start)
        start += duration
    with Image.open(io.BytesIO(data)) as opened:
        size = opened.size
        file_durations = tuple(_duration(frame) for frame in ImageSequence.Iterator(opened))
    sources, at = [], 0
    for duration in file_durations:
        sources.append(kept[bisect.bisect_right(starts, at) - 1])
        at += duration
    return Animation(data, format_, size, file_durations, tuple(sources), source_count, source_size, shrunk)


# -- still pictures -----------------------------------------------------------------------------------------


def encode_to_fit(
    image: Image.Image, limit_bytes: int, *, lossy_format: str = 'jpeg', try_png: bool = True
) -> tuple[bytes, str, str | None]:
    """(bytes, extension, note for the member or None): PNG when it fits, else JPEG (or WebP) that does.

    The lossy encoder tries qualities 95 … 60 (best that fits, by bisection) before making the
    picture smaller; a picture with transparency becomes WebP, which keeps it. The note says what
    the member got instead of the PNG, e.g. "Re-encoded as JPEG to fit this server's upload limit."
    `try_png=False` skips the PNG attempt (seconds for a large picture) when the caller already
    holds a PNG of it that did not fit.
    """
    if limit_bytes <= 0:
        raise ValueError(f'limit_bytes must be positive, got {limit_bytes}')
    if lossy_format not in ('jpeg', 'webp'):
        raise ValueError(f"lossy_format must be 'jpeg' or 'webp', got {lossy_format!r}")
    if try_png:
        buffer = io.BytesIO()
        image.save(buffer, format='PNG')
        if buffer.tell() <= limit_bytes:
            return buffer.getvalue(), '.png', None
    has_alpha = image.mode in ('RGBA', 'LA', 'PA') or 'transparency' in image.info
    format_ = 'webp' if has_alpha else lossy_format
    source = image.convert('RGBA' if has_alpha else 'L' if image.mode in ('1', 'L') else 'RGB')
    size = source.size
    while True:
        frame = source if size == source.size else source.resize(size, Image.Resampling.LANCZOS)
        data, smallest = _best_quality(frame, format_, limit_bytes)
        if data is not None:
            name = 'JPEG' if format_ == 'jpeg' else 'WebP'
            at = f' at {size[0]}×{size[1]} (from {source.width}×{source.height})' if size != source.size else ''
            return (
                data,
                '.jpg' if format_ == 'jpeg' else '.webp',
                f"Re-encoded as {name}{at} to fit this server's upload limit.",
            )
        if min(size) <= STILL_MIN_SIDE:
            raise MediaTooLarge(
                f"This picture can't fit this server's upload limit ({_amount(limit_bytes)}), "
                f'even at {size[0]}×{size[1]} ({_amount(smallest)}).'
            )
        factor = min(0.9, max(0.5, math.sqrt(limit_bytes / smallest * SHRINK_MARGIN)))
        size = max(STILL_MIN_SIDE, round(size[0] * factor)), max(STILL_MIN_SIDE, round(size[1] * factor))


def _best_quality(image: Image.Image, format_: str, limit_bytes: int) -> tuple[bytes | None, int]:
    """The highest of `STILL_QUALITIES` that fits (bytes, size), or (None, size at the lowest quality)."""
    encoded: dict[int, bytes] = {}

    def size_at(position: int) -> int:
        if position not in encoded:
            encoded[position] = _encode_still(image, format_, STILL_QUALITIES[position])
        return len(encoded[position])

    lowest = len(STILL_QUALITIES) - 1
    if size_at(0) <= limit_bytes:
        return encoded[0], len(encoded[0])
    if size_at(lowest) > limit_bytes:
        return None, len(encoded[lowest])
    too_big, fits = 0, lowest  # sizes fall with quality: bisect between a position that fails and one that fits
    while fits - too_big > 1:
        middle = (too_big + fits) // 2
        if size_at(middle) <= limit_bytes:
            fits = middle
        else:
            too_big = middle
    return encoded[fits], len(encoded[fits])


def _encode_still(image: Image.Image, format_: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    if format_ == 'jpeg':
        # Full-resolution colour at the top qualities, where 4:2:0 subsampling would be the visible loss.
        image.save(buffer, format='JPEG', quality=quality, optimize=True, subsampling=0 if quality >= 90 else 2)
    else:
        image.save(buffer, format='WEBP', quality=quality, method=4)
    return buffer.getvalue()


def _amount(size: int) -> str:
    """Bytes as a member reads them: `812 KB`, `9.5 MB` (binary units, as Discord counts its limits)."""
    if size < 1024 * 1024:
        return f'{max(1, round(size / 1024))} KB'
    return f'{size / 1024 / 1024:.1f} MB'
