"""Time-lapses and pictures under a byte limit (`edalle.media`), checked by reading the files back with Pillow."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageSequence

from edalle.media import (
    STILL_QUALITIES,
    MediaTooLarge,
    ShrinkPolicy,
    TimelapseTiming,
    _encode_still,
    encode_to_fit,
    even_indices,
    fit_animation,
    gif_final_frame,
    gif_frame,
    is_animated,
    write_timelapse,
)

BIG = 10**9  # a limit nothing here reaches


def smooth(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A picture with structure at several scales (like a generated one, unlike white noise), float (H, W, 3)."""
    total = np.zeros((height, width, 3))
    for cell in (4, 8, 16, 32):
        coarse = (rng.random((height // cell + 2, width // cell + 2, 3)) * 255).astype(np.uint8)
        total += np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), float) * cell
    return total / total.max() * 255


def scene(count: int, width: int = 96, height: int = 64, seed: int = 0, noise: float = 0.3) -> list[Image.Image]:
    """An optimisation's frames: a noisy start turning into a clean final picture (the last frame)."""
    rng = np.random.default_rng(seed)
    start = smooth(rng, width, height) * (1 - noise) + rng.random((height, width, 3)) * 255 * noise
    final = smooth(rng, width, height)
    frames = []
    for i in range(count):
        t = i / (count - 1)
        frames.append(Image.fromarray(np.clip((1 - t) * start + t * final, 0, 255).astype(np.uint8)))
    return frames


def read_back(data: bytes) -> tuple[str, list[Image.Image], list[int]]:
    """(format, frames as RGB, durations in ms), as a viewer shows them."""
    with Image.open(io.BytesIO(data)) as opened:
        frames, durations = [], []
        for frame in ImageSequence.Iterator(opened):
            frame.load()
            frames.append(frame.convert('RGB'))
            durations.append(frame.info['duration'])
        return opened.format, frames, durations


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert('RGB'), dtype=np.int16)


# -- timing and frame choice --------------------------------------------------------------------------------


def test_timing_spreads_the_progression_and_holds_the_final_picture() -> None:
    timing = TimelapseTiming()
    assert timing.max_frames == 101
    for count in (2, 3, 5, 9, 10, 17, 50, 101):
        durations = timing.durations(count)
        assert len(durations) == count and durations[-1] == 1500
        assert all(d % 10 == 0 and 40 <= d <= 500 for d in durations[:-1])
        assert len(set(durations[:-1])) == 1
        assert sum(durations) <= 6000
        if count >= 9:  # enough frames to fill the progression: about 4 s of change, then the final picture
            assert 5000 <= sum(durations) <= 6000
    with pytest.raises(ValueError):
        timing.durations(1)


@pytest.mark.parametrize(('count', 'keep'), [(2, 2), (3, 2), (10, 3), (150, 101), (101, 100), (1000, 16), (7, 7), (5, 9)])
def test_even_indices_keep_the_ends_and_space_the_rest_evenly(count: int, keep: int) -> None:
    kept = even_indices(count, keep)
    assert len(kept) == min(count, keep)
    assert kept[0] == 0 and kept[-1] == count - 1
    gaps = np.diff(kept)
    assert gaps.min() >= 1 and gaps.max() - gaps.min() <= 1


# -- GIF ----------------------------------------------------------------------------------------------------


def test_a_gif_timelapse_reads_back_whole_with_the_final_picture_exact_after_its_own_palette() -> None:
    frames = scene(12)
    animation = write_timelapse(frames, BIG)
    format_, shown, durations = read_back(animation.data)
    assert (format_, animation.format, animation.extension, animation.mime_type) == ('GIF', 'gif', '.gif', 'image/gif')
    assert animation.frame_count == len(shown) == 12
    assert tuple(durations) == animation.durations_ms == TimelapseTiming().durations(12)
    assert animation.source_frames == tuple(range(12)) and animation.size == (96, 64)
    assert not animation.shrunk and animation.note is None
    for frame, source in zip(shown[:-1], frames[:-1], strict=True):
        assert np.array_equal(pixels(frame), pixels(gif_frame(source)))
    # GIF holds 256 colours a frame: "exact" means exactly the final picture through its own adaptive palette.
    assert np.array_equal(pixels(shown[-1]), pixels(gif_final_frame(frames[-1])))
    error = pixels(shown[-1]) - pixels(frames[-1])
    assert 10 * np.log10(255**2 / np.mean(error.astype(float) ** 2)) > 30  # and that palette is a good one (PSNR, dB)


def test_frames_repeating_the_one_before_are_folded_into_it_with_their_time() -> None:
    red, green, blue = (Image.new('RGB', (32, 24), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200)))
    animation = write_timelapse([red, red, green, blue, blue], BIG)
    _, shown, durations = read_back(animation.data)
    assert TimelapseTiming().durations(5) == (500, 500, 500, 500, 1500)
    assert animation.durations_ms == tuple(durations) == (1000, 500, 2000)
    assert animation.source_frames == (0, 2, 3)
    assert [frame.getpixel((5, 5)) for frame in shown] == [(200, 0, 0), (0, 200, 0), (0, 0, 200)]


def test_more_frames_than_the_timing_allows_are_thinned_evenly() -> None:
    frames = [Image.new('RGB', (16, 16), (i, 255 - i, 7)) for i in range(150)]
    animation = write_timelapse(frames, BIG)
    _, shown, _ = read_back(animation.data)
    assert animation.frame_count == len(shown) == 101
    assert animation.source_frames == even_indices(150, 101)
    assert [frame.getpixel((0, 0))[0] for frame in shown] == list(animation.source_frames)
    assert not animation.shrunk  # thinned for its timing, not for the limit


def test_arrays_and_images_give_the_same_file() -> None:
    frames = scene(6, 40, 30)
    arrays = [np.asarray(frame) for frame in frames]
    assert write_timelapse(arrays, BIG).data == write_timelapse(frames, BIG).data
    with pytest.raises(ValueError, match='uint8'):
        write_timelapse([array.astype(np.float32) for array in arrays], BIG)
    with pytest.raises(ValueError, match='size'):
        write_timelapse([*frames[:-1], frames[-1].resize((41, 30))], BIG)
    with pytest.raises(ValueError, match='two frames'):
        write_timelapse(frames[:1], BIG)


def test_a_tiny_limit_is_met_deterministically_with_an_animation_that_ends_on_the_final_picture() -> None:
    frames = scene(40, 128, 128, noise=0.6)
    whole = write_timelapse(frames, BIG)
    limit = 24_000
    assert len(whole.data) > 10 * limit
    animation = write_timelapse(frames, limit)
    assert len(animation.data) <= limit
    assert animation.data == write_timelapse(frames, limit).data
    _, shown, durations = read_back(animation.data)
    assert 2 <= animation.frame_count == len(shown) < 16  # it went past the frame floor, so it was scaled down first
    assert animation.size != (128, 128) and min(animation.size) >= 64
    assert animation.source_frames[0] == 0 and animation.source_frames[-1] == 39
    assert tuple(durations) == animation.durations_ms and durations[-1] == 1500
    final = frames[-1].resize(animation.size, Image.Resampling.LANCZOS)
    assert np.array_equal(pixels(shown[-1]), pixels(gif_final_frame(final)))
    assert animation.shrunk and animation.note is not None and 'upload limit' in animation.note
    assert f'{animation.size[0]}×{animation.size[1]} (from 128×128)' in animation.note


def test_frames_drop_before_the_picture_gets_smaller() -> None:
    frames = scene(60, 64, 48)
    whole = write_timelapse(frames, BIG)
    animation = write_timelapse(frames, len(whole.data) * 2 // 3)
    assert animation.size == (64, 48) and 16 <= animation.frame_count < 60
    assert animation.note == f"Sent with {animation.frame_count} of 60 frames to fit this server's upload limit."


def test_a_limit_too_small_for_two_tiny_frames_is_a_clear_error() -> None:
    with pytest.raises(MediaTooLarge, match=r"can't fit this server's upload limit \(2 KB\): even two frames at 96×64"):
        write_timelapse(scene(10, 192, 128), 2000)


# -- WebP ---------------------------------------------------------------------------------------------------


def test_lossless_webp_keeps_every_frame_exactly() -> None:
    frames = scene(8)
    animation = write_timelapse(frames, BIG, formats=('webp',), policy=ShrinkPolicy(webp_quality=None))
    format_, shown, durations = read_back(animation.data)
    assert (format_, animation.extension) == ('WEBP', '.webp')
    assert tuple(durations) == animation.durations_ms == TimelapseTiming().durations(8)
    for frame, source in zip(shown, frames, strict=True):
        assert np.array_equal(pixels(frame), pixels(source))


def test_lossy_webp_reports_the_frames_the_file_holds() -> None:
    frames = scene(8)
    almost = Image.fromarray(np.clip(pixels(frames[3]) + 1, 0, 255).astype(np.uint8))  # within libwebp's tolerance
    frames = [*frames[:4], almost, *frames[4:]]
    animation = write_timelapse(frames, BIG, formats=('webp',))
    _, shown, durations = read_back(animation.data)
    assert animation.frame_count == len(shown) == 8  # the near-copy was folded into frame 3
    assert tuple(durations) == animation.durations_ms and sum(durations) == sum(TimelapseTiming().durations(9))
    assert 4 not in animation.source_frames and animation.source_frames[-1] == 8
    assert np.abs(pixels(shown[-1]) - pixels(frames[-1])).mean() < 4  # lossy: close, not equal


def test_webp_is_taken_only_where_the_gif_would_have_to_shrink() -> None:
    frames = scene(30, 96, 64)
    gif = write_timelapse(frames, BIG)
    assert write_timelapse(frames, len(gif.data), formats=('gif', 'webp')).format == 'gif'
    animation = write_timelapse(frames, len(gif.data) // 3, formats=('gif', 'webp'))
    assert animation.format == 'webp' and not animation.shrunk and len(animation.data) <= len(gif.data) // 3


# -- animated files over a limit ----------------------------------------------------------------------------


def test_fit_animation_keeps_an_oversized_gif_animated_and_as_long() -> None:
    source = write_timelapse(scene(40, 96, 96), BIG)
    assert is_animated(source.data)
    limit = len(source.data) // 3
    animation = fit_animation(source.data, limit)
    format_, shown, durations = read_back(animation.data)
    assert format_ == 'GIF' and len(animation.data) <= limit
    assert 2 <= len(shown) == animation.frame_count < 40
    assert sum(durations) == sum(source.durations_ms)  # a dropped frame's time goes to the kept one before it
    assert animation.source_frames[0] == 0 and animation.source_frames[-1] == 39


def test_fit_animation_keeps_the_files_format() -> None:
    source = write_timelapse(scene(40, 96, 96), BIG, formats=('webp',), policy=ShrinkPolicy(webp_quality=None))
    assert is_animated(source.data)
    animation = fit_animation(source.data, len(source.data) // 2, policy=ShrinkPolicy(webp_quality=None))
    assert animation.format == 'webp' and len(animation.data) <= len(source.data) // 2 and animation.frame_count > 1
    assert fit_animation(source.data, len(source.data) // 2, formats=('gif',)).format == 'gif'


# -- still pictures -----------------------------------------------------------------------------------------


def test_a_still_that_fits_stays_a_lossless_png() -> None:
    picture = scene(2, 64, 64)[1]
    data, extension, note = encode_to_fit(picture, BIG)
    assert (extension, note) == ('.png', None)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == 'PNG' and np.array_equal(pixels(decoded), pixels(picture))
    assert not is_animated(data)
    _, extension, note = encode_to_fit(picture, BIG, try_png=False)  # the caller's PNG did not fit: straight to JPEG
    assert (extension, note) == ('.jpg', "Re-encoded as JPEG to fit this server's upload limit.")


def test_a_still_over_the_limit_gets_the_best_jpeg_quality_that_fits() -> None:
    picture = scene(2, 192, 160, noise=0.5)[0]
    sizes = [len(_encode_still(picture, 'jpeg', quality)) for quality in STILL_QUALITIES]
    assert sizes == sorted(sizes, reverse=True)
    for position, size in enumerate(sizes):
        data, extension, note = encode_to_fit(picture, size)
        assert data == _encode_still(picture, 'jpeg', STILL_QUALITIES[position])
        assert (extension, note) == ('.jpg', "Re-encoded as JPEG to fit this server's upload limit.")
        data, _, _ = encode_to_fit(picture, size - 1)
        assert len(data) < size - 1 and data != _encode_still(picture, 'jpeg', STILL_QUALITIES[position])


def test_a_still_far_over_the_limit_is_made_smaller_and_says_so() -> None:
    picture = scene(2, 256, 192, noise=0.5)[0]
    data, extension, note = encode_to_fit(picture, 6000)
    assert len(data) <= 6000 and extension == '.jpg'
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == 'JPEG' and decoded.width < 256
        size = f'{decoded.width}×{decoded.height}'
        assert note == f"Re-encoded as JPEG at {size} (from 256×192) to fit this server's upload limit."
    assert encode_to_fit(picture, 6000) == (data, extension, note)
    webp, extension, note = encode_to_fit(picture, 6000, lossy_format='webp')
    assert extension == '.webp' and note is not None and note.startswith('Re-encoded as WebP') and len(webp) <= 6000
    with pytest.raises(MediaTooLarge, match="can't fit this server's upload limit"):
        encode_to_fit(picture, 200)


def test_a_still_with_transparency_stays_transparent() -> None:
    picture = scene(2, 128, 128, noise=0.5)[0].convert('RGBA')
    picture.putalpha(Image.linear_gradient('L').resize((128, 128)))
    data, extension, note = encode_to_fit(picture, 15_000)
    assert extension == '.webp' and len(data) <= 15_000 and note is not None
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == 'RGBA' and decoded.getpixel((64, 0))[3] < 16 and decoded.getpixel((64, 127))[3] > 240


# -- the bot process stays light ----------------------------------------------------------------------------


def test_importing_media_loads_no_array_or_model_library() -> None:
    code = "import sys, edalle.media; print(sorted(m for m in ('numpy', 'torch', 'jax') if m in sys.modules))"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'
