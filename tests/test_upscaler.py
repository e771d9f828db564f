"""The ×4 upscaler on the tiny preset's RRDBNet: the published layout, spandrel's loading, tiling, the input cap.

The tiny network is Real-ESRGAN's architecture at toy size with seeded random weights, so the
tests assert what random weights can show: sizes, determinism, the architecture spandrel
recognises, and that tiled and whole-picture inference agree (see `test_tiled_equals_whole…`
for the tolerance and why).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edalle.models.upscaler import (
    DEFAULT_OVERLAP,
    REALESRGAN_X4PLUS,
    TINY_RRDBNET,
    Upscaler,
    UpscalerError,
    load_upscaler,
    receptive_radius,
    rrdbnet_state_dict,
    write_rrdbnet_weights,
)
from edalle.upscale import DEFAULT_MAX_INPUT_PIXELS, UpscaleInputTooLarge, check_input_size, load_upscaler_for
from edalle.weights import TINY_SEED, MissingWeights

SEED = TINY_SEED


@pytest.fixture(scope='module')
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('upscaler') / 'rrdbnet_x4.pth'
    write_rrdbnet_weights(path, TINY_RRDBNET, SEED)
    return path


@pytest.fixture(scope='module')
def upscaler(tiny_weights: Path) -> Upscaler:
    """fp32, so that comparisons between two computation paths see float rounding only."""
    return load_upscaler(tiny_weights, 'cpu', dtype=torch.float32)


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random picture (coarse noise, bicubic-enlarged): like a photo, every region differs."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 6), max(2, width // 6), 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.BICUBIC)


def pixels_of(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (3, H, W) uint8


# --------------------------------------------------------------------------- the published layout


def test_tiny_weights_are_in_the_published_layout(tiny_weights: Path) -> None:
    saved = torch.load(tiny_weights, weights_only=True)
    assert list(saved) == ['params_ema']  # Real-ESRGAN's release files wrap the EMA weights like this
    state = saved['params_ema']
    names = list(state)
    assert names[:2] == ['conv_first.weight', 'conv_first.bias']
    assert names[-10:] == [
        f'{layer}.{kind}'
        for layer in ('conv_body', 'conv_up1', 'conv_up2', 'conv_hr', 'conv_last')
        for kind in ('weight', 'bias')
    ]
    assert len(names) == 2 + TINY_RRDBNET.num_block * 3 * 5 * 2 + 10
    assert state['body.1.rdb3.conv4.weight'].shape == (32, 16 + 3 * 32, 3, 3)
    assert state['conv_last.weight'].shape == (3, 16, 3, 3)
    assert all(t.dtype == torch.float32 for t in state.values())


def test_spandrel_detects_the_tiny_weights_as_a_x4_esrgan(upscaler: Upscaler) -> None:
    descriptor = upscaler.descriptor
    assert upscaler.architecture == 'ESRGAN' and upscaler.scale == 4
    assert descriptor.purpose == 'SR' and descriptor.input_channels == 3 and descriptor.output_channels == 3
    assert descriptor.tags == ['16nf', '2nb']  # the sizes it read back from the state dict


def test_a_published_size_state_dict_builds_real_esrgan_x4plus() -> None:
    from spandrel import ModelLoader

    descriptor = ModelLoader().load_from_state_dict({'params_ema': rrdbnet_state_dict(REALESRGAN_X4PLUS, SEED)})
    assert str(descriptor.architecture.id) == 'ESRGAN' and descriptor.scale == 4
    assert descriptor.tags == ['64nf', '23nb']
    assert sum(p.numel() for p in descriptor.model.parameters()) == 16_697_987  # RealESRGAN_x4plus.pth's count


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    write_rrdbnet_weights(tmp_path / 'a' / 'rrdbnet_x4.pth', TINY_RRDBNET, SEED)
    write_rrdbnet_weights(tmp_path / 'b' / 'rrdbnet_x4.pth', TINY_RRDBNET, SEED)
    write_rrdbnet_weights(tmp_path / 'c' / 'rrdbnet_x4.pth', TINY_RRDBNET, SEED + 1)
    a, b, c = ((tmp_path / d / 'rrdbnet_x4.pth').read_bytes() for d in 'abc')
    assert a == b and a != c


# --------------------------------------------------------------------------- upscaling


@pytest.mark.parametrize('size', [(37, 23), (1, 3), (20, 52)])
def test_upscale_is_exactly_four_times_and_deterministic(upscaler: Upscaler, size: tuple[int, int]) -> None:
    image = picture(*size)
    first = upscaler.upscale(image, tile=24)  # 2 × 1, 1 × 1 and 1 × 3 tiles
    second = upscaler.upscale(image, tile=24)
    assert first.size == (4 * size[0], 4 * size[1]) and first.mode == 'RGB'
    assert first.tobytes() == second.tobytes()


def test_the_automatic_dtype_is_deterministic_too(tiny_weights: Path) -> None:
    upscaler = load_upscaler(tiny_weights)  # bf16 on a CPU with native bf16, else fp32
    image = picture(40, 24)
    assert upscaler.upscale(image).tobytes() == upscaler.upscale(image).tobytes()


def test_the_output_is_not_clipped_so_comparisons_compare_values(upscaler: Upscaler) -> None:
    out = upscaler.upscale_tensor(pixels_of(picture(48, 40)), tile=None)
    assert 0.0 < float(out.min()) and float(out.max()) < 1.0 and float(out.std()) > 0.05


def test_receptive_radius_is_how_far_one_pixel_reaches(upscaler: Upscaler) -> None:
    """Flip one input pixel: the outputs that change lie within exactly `receptive_radius` input pixels of it."""
    radius = receptive_radius(TINY_RRDBNET)
    assert radius == 34
    size = 2 * radius + 9
    source = pixels_of(picture(size, size))
    flipped = source.clone()
    centre = size // 2
    flipped[:, centre, centre] = 255 - flipped[:, centre, centre]
    changed = (upscaler.upscale_tensor(flipped, tile=None) != upscaler.upscale_tensor(source, tile=None)).any(0)
    rows, cols = torch.nonzero(changed).T
    reach = max(centre - int(rows.min()) // 4, int(rows.max()) // 4 - centre, centre - int(cols.min()) // 4)
    assert reach == radius


def test_tiled_equals_whole_within_float_rounding(upscaler: Upscaler) -> None:
    """Each output pixel comes from one tile that read `overlap` pixels of context around its core.

    With `overlap` ≥ the receptive radius a tile sees every input its core depends on, and the
    picture's own border is the same zero padding in both paths, so the only difference left
    is float rounding: the same sums, computed by convolutions of a different size and so with
    a different blocking and summation order. Measured on this network: at most 4e-7 (a few
    ulp of fp32 at these values, through 36 convolutions), which turns into one step of 8-bit
    output where a value sits at a rounding boundary (about 1 value in 10⁵). Bounds used: 1e-5
    in float; in 8 bits, 1 step on under 0.1 % of the values.
    With the default overlap (16 < 34) the outer part of the receptive field is cut off, but its
    weight has fallen below fp32 resolution by then: measured max differences by overlap are
    0.36 (none: each tile's edge is zero-padded, visible seams), 5e-3 (4), 2e-4 (8), 3e-7 (16).
    """
    source = pixels_of(picture(72, 60))
    whole = upscaler.upscale_tensor(source, tile=None)
    for overlap in (receptive_radius(TINY_RRDBNET), DEFAULT_OVERLAP):
        tiled = upscaler.upscale_tensor(source, tile=24, overlap=overlap)  # 3 × 3 tiles, cores of 24 × 20
        assert float((tiled - whole).abs().max()) < 1e-5, overlap
    # As `upscale` rounds them: the default overlap's result against the whole picture's, in 8 bits.
    eight_bit = ((tiled * 255).round() - (whole * 255).round()).abs()
    assert float(eight_bit.max()) <= 1 and float((eight_bit > 0).float().mean()) < 1e-3
    seams = upscaler.upscale_tensor(source, tile=24, overlap=0)
    assert float((seams - whole).abs().max()) > 0.1


@pytest.mark.parametrize(
    ('dtype', 'bound'),
    [pytest.param(torch.float16, 3e-3, marks=pytest.mark.slow), (torch.bfloat16, 2e-2)],  # CPUs emulate fp16: slow
)
def test_reduced_precision_stays_within_a_few_8_bit_levels_of_fp32(
    tiny_weights: Path, upscaler: Upscaler, dtype: torch.dtype, bound: float
) -> None:
    """fp16 (CUDA's type here) and bf16 (native-bf16 CPUs') against fp32, on the CPU.

    Each conv rounds its output to the narrow type: fp16 keeps 11 significant bits (5e-4 relative),
    bf16 8 (4e-3). Measured max differences over 36 convs: 6e-4 (fp16) and 5e-3 (bf16), i.e.
    under one and about one 8-bit level (1/255 = 4e-3); bounds are 5× and 4× those.
    """
    source = pixels_of(picture(40, 32))
    reduced = load_upscaler(tiny_weights, dtype=dtype)
    assert reduced.dtype == dtype
    difference = (reduced.upscale_tensor(source, tile=None) - upscaler.upscale_tensor(source, tile=None)).abs()
    assert float(difference.max()) < bound and float(difference.mean()) < bound / 5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_on_cuda_the_upscaler_runs_in_fp16_close_to_fp32_on_the_cpu(tiny_weights: Path, upscaler: Upscaler) -> None:
    gpu = load_upscaler(tiny_weights, 'cuda')
    assert gpu.dtype == torch.float16
    source = pixels_of(picture(72, 60))
    out = gpu.upscale_tensor(source, tile=24)
    assert out.device.type == 'cpu' and out.dtype == torch.float32
    assert float((out - upscaler.upscale_tensor(source, tile=None)).abs().max()) < 3e-3
    assert gpu.upscale(picture(72, 60)).tobytes() == gpu.upscale(picture(72, 60)).tobytes()


def test_tiles_report_progress_and_a_raise_stops(upscaler: Upscaler) -> None:
    seen: list[tuple[int, int]] = []
    upscaler.upscale(picture(70, 20), tile=32, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]  # 70 wide in cores of ≤ 32: three of 23-24; one row

    class Stop(Exception):
        pass

    def stop(done: int, total: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        upscaler.upscale(picture(70, 20), tile=32, progress=stop)


def test_bad_tiling_arguments_are_refused(upscaler: Upscaler) -> None:
    with pytest.raises(ValueError, match='tile'):
        upscaler.upscale(picture(8, 8), tile=0)
    with pytest.raises(ValueError, match='overlap'):
        upscaler.upscale(picture(8, 8), overlap=-1)


def test_compute_dtype_follows_the_device(tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edalle.models import cpu

    monkeypatch.setattr(cpu, 'native_bf16_cpu', lambda: True)
    assert load_upscaler(tiny_weights).dtype == torch.bfloat16
    monkeypatch.setattr(cpu, 'native_bf16_cpu', lambda: False)
    assert load_upscaler(tiny_weights).dtype == torch.float32


# --------------------------------------------------------------------------- loading errors


def test_missing_weights_say_how_to_install_them(tmp_path: Path) -> None:
    with pytest.raises(MissingWeights) as caught:
        load_upscaler_for('mini', tmp_path)
    message = str(caught.value)
    assert 'realesrgan-x4plus/RealESRGAN_x4plus.pth' in message and str(tmp_path) in message
    assert 'edalle models download --preset upscale' in message and 'edalle models import DIR --preset upscale' in message
    with pytest.raises(FileNotFoundError, match='No upscaler weights'):
        load_upscaler(tmp_path / 'RealESRGAN_x4plus.pth')


@pytest.mark.slow  # generates the whole tiny preset: about 6 s
def test_the_tiny_preset_makes_its_upscaler_on_first_use(tmp_path: Path) -> None:
    upscaler = load_upscaler_for('tiny', tmp_path, dtype=torch.float32)
    assert upscaler.architecture == 'ESRGAN' and upscaler.upscale(picture(9, 7)).size == (36, 28)


def test_weights_that_are_not_a_x4_rgb_upscaler_are_refused(tmp_path: Path) -> None:
    two_times = rrdbnet_state_dict(TINY_RRDBNET, SEED)
    del two_times['conv_up2.weight'], two_times['conv_up2.bias']  # one upsampling stage: ×2
    torch.save({'params_ema': two_times}, tmp_path / 'x2.pth')
    with pytest.raises(UpscalerError, match='×2 model'):
        load_upscaler(tmp_path / 'x2.pth')
    torch.save({'weight': torch.zeros(3)}, tmp_path / 'other.pth')
    with pytest.raises(UpscalerError, match='not a super-resolution model'):
        load_upscaler(tmp_path / 'other.pth')


# --------------------------------------------------------------------------- the input cap


def test_the_input_cap_names_the_largest_allowed() -> None:
    check_input_size(512, 512)  # the default cap, exactly
    check_input_size(448, 256)
    with pytest.raises(UpscaleInputTooLarge) as caught:
        check_input_size(513, 512)
    assert caught.value.max_pixels == DEFAULT_MAX_INPUT_PIXELS
    assert str(caught.value) == (
        'That picture is 513×512 (262,656 pixels); the largest I upscale here is 262,144 pixels, e.g. 512×512. '
        'Crop or shrink it and try again.'
    )
    with pytest.raises(UpscaleInputTooLarge, match='65,536 pixels, e.g. 256×256'):
        check_input_size(448, 256, max_pixels=256 * 256)
    with pytest.raises(ValueError, match='at least one pixel'):
        check_input_size(0, 10)
