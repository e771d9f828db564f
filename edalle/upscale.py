"""The ×4 upscale's torch-free side: the input cap, and whether (and where) its weights are installed.

The bot imports this without torch: it hides the Upscale button when `upscale_installed` says
no, and refuses a picture over the admins' cap with `check_input_size` before queueing. The
worker loads the network with `load_upscaler_for` (which imports torch only when called).
`mini` and `mega` share one upscaler, the `upscale` add-on (Real-ESRGAN x4plus,
`edalle models download --preset upscale`); `tiny` generates a small network of the same
architecture with its other files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from edalle.config import UPSCALE
from edalle.errors import AdmissionRefused
from edalle.presets import get_preset, models_dir

if TYPE_CHECKING:
    import torch

    from edalle.models.upscaler import Upscaler

SCALE = UPSCALE  # every side of the result is 4× the input's
# 512 × 512 in makes 2048 × 2048 out (4.2 MP). Real-ESRGAN x4plus costs 36 MFLOP per input pixel
# (9.4 TFLOP here): 72 s of one CPU core in bf16, with 0.55 GB of activations at the default tiling
# (bench/RESULTS.md, "Upscale"); a GPU does it in seconds at most.
DEFAULT_MAX_INPUT_PIXELS = 512 * 512


class UpscaleInputTooLarge(AdmissionRefused):
    """That picture is bigger than this server upscales."""

    def __init__(self, width: int, height: int, max_pixels: int) -> None:
        self.width = width
        self.height = height
        self.max_pixels = max_pixels
        side = math.isqrt(max_pixels)
        super().__init__(
            f'That picture is {width}×{height} ({width * height:,} pixels); the largest I upscale here is '
            f'{max_pixels:,} pixels, e.g. {side}×{side}. Crop or shrink it and try again.'
        )


def check_input_size(width: int, height: int, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> None:
    """Raise `UpscaleInputTooLarge` (its message names the largest allowed) when width × height exceeds the cap.

    The cap counts pixels, not sides, because time and memory grow with the area: a 16:9
    expansion (448 × 256) and a square candidate cost about alike.
    """
    if width < 1 or height < 1:
        raise ValueError(f'a picture needs at least one pixel, not {width}×{height}')
    if width * height > max_pixels:
        raise UpscaleInputTooLarge(width, height, max_pixels)


def upscaler_file(data_dir: Path, preset_name: str) -> Path:
    """Where the ×4 weights for a preset's pictures belong, present or not: tiny's own, else Real-ESRGAN's."""
    component = get_preset(preset_name).upscaler_files
    return component.required_paths(models_dir(data_dir))[0]


def upscaler_path(data_dir: Path, preset_name: str) -> Path | None:
    """The ×4 weights file for a preset's pictures, or None when it is not on disk (nothing is generated here)."""
    path = upscaler_file(data_dir, preset_name)
    return path if path.is_file() else None


def upscale_installed(data_dir: Path, preset_name: str) -> bool:
    """Whether a worker running `preset_name` can upscale: its weights are on disk, or it generates them (tiny).

    Only presence is checked (cheap enough for every message the bot renders); `edalle models
    verify --preset upscale` checks the hash.
    """
    return get_preset(preset_name).generated or upscaler_path(data_dir, preset_name) is not None


def load_upscaler_for(
    preset_name: str, data_dir: Path, device: str | torch.device = 'cpu', *, dtype: torch.dtype | None = None
) -> Upscaler:
    """The upscaler for a preset's pictures: tiny's own (generated on first use), else the `upscale` add-on's.

    Raises `MissingWeights` naming the download and import commands when the file is not installed.
    """
    from edalle.models.upscaler import load_upscaler
    from edalle.presets import ADD_ONS
    from edalle.weights import MissingWeights, ensure_tiny

    if get_preset(preset_name).generated:
        ensure_tiny(data_dir)
    path = upscaler_file(data_dir, preset_name)
    if not path.is_file():
        raise MissingWeights(ADD_ONS['upscale'], [path])
    return load_upscaler(path, device, dtype=dtype)
