"""×4 super-resolution with Real-ESRGAN (or any ×4 model spandrel recognises), tiled so memory stays bounded.

Re-decoding VQGAN tokens at a larger size is not super-resolution (a token is a 16-px patch),
so the upscale is a network trained for it: Real-ESRGAN x4plus, an RRDBNet. `spandrel` reads the
state dict, recognises the architecture from its key names and shapes and builds the network;
nothing here defines a layer. The only thing this module knows about the architecture is the
published file's layout (`rrdbnet_state_dict`), so that the tiny preset's seeded network goes
through exactly the loading path the real file does.

Tiling. The picture is cut into cores of at most `tile` × `tile` input pixels; each core is read
with up to `overlap` pixels of its neighbours around it (less at the picture's edges), upscaled,
and only the core's ×4 pixels are kept: every output pixel comes from exactly one tile, computed
with at least `overlap` input pixels of real context on every side. No blending is needed, and an
output pixel differs from the whole-picture result only through what lies beyond `overlap` pixels
of it; with `overlap` at least the network's receptive-field radius (`receptive_radius`) tiled and
whole agree up to float rounding. The network's conv padding at the picture's own border is the
same zero padding in both, so the edges are no special case.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from edalle.config import UPSCALE as SCALE
from edalle.models import cpu

if TYPE_CHECKING:
    from spandrel import ImageModelDescriptor

# A DALL·E picture (256 × 256) is one tile. For a 2048² result (512² in, Real-ESRGAN's size, bf16 on
# one CPU core) 256-px tiles add 0.55 GB to the process and take 72 s of CPU, against 1.6 GB and
# 102 s untiled (large activations miss the caches) and 0.2 GB and 86 s with 128-px tiles (their
# 16-px overlap is a larger share of each window): bench/RESULTS.md, "Upscale".
DEFAULT_TILE = 256
# Input pixels of context around each tile. Real-ESRGAN's own inference script pads its tiles by
# 10 (`--tile_pad`). The full receptive field (`receptive_radius`, 349 px for x4plus) would cost
# more than the tile itself; what lies that far contributes next to nothing (on the tiny network
# at full gain, less than fp32 resolution beyond 16 px: tests/test_upscaler.py).
DEFAULT_OVERLAP = 16

# progress(tiles_done, tiles_total), called after each tile; raise from it to stop.
TileProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class RRDBNetSize:
    """The sizes of Real-ESRGAN's RRDBNet (basicsr's `RRDBNet`, ×4): enough to write a state dict in its layout."""

    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32  # spandrel builds every RRDB with 32 growth channels: other values do not load
    num_in_ch: int = 3
    num_out_ch: int = 3


REALESRGAN_X4PLUS = RRDBNetSize()  # RealESRGAN_x4plus.pth: 16.7 M parameters
TINY_RRDBNET = RRDBNetSize(num_feat=16, num_block=2)  # the tiny preset's: the same architecture, 0.58 M parameters


def receptive_radius(size: RRDBNetSize) -> int:
    """How many input pixels away an output pixel can see: every 3×3 conv reaches one pixel further at its scale.

    At ×1: the first conv, 5 convs × 3 dense blocks per RRDB block, the trunk's last conv, so
    15 · blocks + 2. At ×2 one conv, and at ×4 three: after the nearest-neighbour upsampling
    their reach adds up to 2 more input pixels. A tile read with `overlap` at least this sees
    everything its core depends on (the tests measure a one-pixel change reaching exactly this far).
    """
    return 15 * size.num_block + 4


def rrdbnet_state_dict(size: RRDBNetSize, seed: int) -> OrderedDict[str, torch.Tensor]:
    """Seeded random weights under the key names and in the order of `RealESRGAN_x4plus.pth`'s `params_ema`.

    Key names are basicsr's RRDBNet (`conv_first`, `body.{i}.rdb{1,2,3}.conv{1..5}`, `conv_body`,
    `conv_up1`, `conv_up2`, `conv_hr`, `conv_last`), fp32 like the published file. Every conv is
    Kaiming-normal at full gain: basicsr scales the blocks' convs by 0.1 for training, which keeps
    an untrained trunk so close to the identity that a pixel's influence fades below float
    resolution within ~10 pixels; at full gain it reaches the whole receptive field (measured:
    exactly `receptive_radius`), so the tiling tests exercise it. The last conv (gain 0.04, bias
    0.5) keeps the untrained output inside (0, 1), so no comparison is between clipped values.
    """
    generator = torch.Generator().manual_seed(seed)

    def conv(out_ch: int, in_ch: int, gain: float, bias: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        std = gain * (2.0 / (in_ch * 9)) ** 0.5
        weight = torch.randn((out_ch, in_ch, 3, 3), generator=generator) * std
        return weight, torch.full((out_ch,), bias)

    feat, grow = size.num_feat, size.num_grow_ch
    layers: list[tuple[str, tuple[torch.Tensor, torch.Tensor]]] = [('conv_first', conv(feat, size.num_in_ch, 1.0))]
    for block in range(size.num_block):
        for rdb in (1, 2, 3):
            for index in range(1, 5):  # conv1..conv4 each add `grow` channels to the dense concatenation
                layers.append((f'body.{block}.rdb{rdb}.conv{index}', conv(grow, feat + (index - 1) * grow, 1.0)))
            layers.append((f'body.{block}.rdb{rdb}.conv5', conv(feat, feat + 4 * grow, 1.0)))
    layers += [
        ('conv_body', conv(feat, feat, 1.0)),
        ('conv_up1', conv(feat, feat, 1.0)),
        ('conv_up2', conv(feat, feat, 1.0)),
        ('conv_hr', conv(feat, feat, 1.0)),
        ('conv_last', conv(size.num_out_ch, feat, 0.04, bias=0.5)),
    ]
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, (weight, bias) in layers:
        state[f'{name}.weight'] = weight
        state[f'{name}.bias'] = bias
    return state


def write_rrdbnet_weights(path: Path, size: RRDBNetSize, seed: int) -> None:
    """Write seeded RRDBNet weights as the published file is laid out: `torch.save({'params_ema': state_dict})`.

    `torch.save` output depends only on the tensors and the file's stem (its archive folder name),
    so the same seed makes the same bytes on every machine.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'params_ema': rrdbnet_state_dict(size, seed)}, path)


class UpscalerError(ValueError):
    """A weights file that is not a ×4 RGB super-resolution model; the message names the file and what it is."""


class Upscaler:
    """A loaded ×4 network on one device; `upscale` takes and gives PIL pictures."""

    def __init__(self, descriptor: ImageModelDescriptor, device: torch.device, dtype: torch.dtype) -> None:
        self.descriptor = descriptor.to(device).to(dtype).eval()
        self.device = device
        self.dtype = dtype

    @property
    def architecture(self) -> str:
        """spandrel's id for the network it recognised (Real-ESRGAN's RRDBNet is 'ESRGAN')."""
        return str(self.descriptor.architecture.id)

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    def upscale(
        self,
        image: Image.Image,
        *,
        tile: int | None = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        progress: TileProgress | None = None,
    ) -> Image.Image:
        """The picture, 4× wider and 4× taller, RGB (transparency is dropped). The same input gives the same output.

        `tile`: largest core side in input pixels (None: the whole picture in one pass, whose memory
        grows with its area); `overlap`: input pixels of context read around each core.
        """
        rgb = torch.from_numpy(np.array(image.convert('RGB')))  # (H, W, 3) uint8
        out = self.upscale_tensor(rgb.permute(2, 0, 1), tile=tile, overlap=overlap, progress=progress)
        out8 = (out * 255).round_().to(torch.uint8).permute(1, 2, 0).numpy()  # (4H, 4W, 3)
        return Image.fromarray(out8, 'RGB')

    def upscale_tensor(
        self,
        pixels: torch.Tensor,
        *,
        tile: int | None = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        progress: TileProgress | None = None,
    ) -> torch.Tensor:
        """(3, H, W) uint8 → (3, 4H, 4W) float32 in [0, 1] on the CPU, tile by tile (see the module's docstring)."""
        if tile is not None and tile < 1:
            raise ValueError(f'tile must be a positive number of pixels or None, not {tile}')
        if overlap < 0:
            raise ValueError(f'overlap must be 0 or more pixels, not {overlap}')
        _, height, width = pixels.shape
        out = torch.empty((3, height * SCALE, width * SCALE), dtype=torch.float32)
        rows = _spans(height, tile or height)
        cols = _spans(width, tile or width)
        for index, ((top, bottom), (left, right)) in enumerate((r, c) for r in rows for c in cols):
            # The window read for this core: the core and up to `overlap` pixels around it.
            win_top, win_left = max(0, top - overlap), max(0, left - overlap)
            win_bottom, win_right = min(height, bottom + overlap), min(width, right + overlap)
            window = pixels[None, :, win_top:win_bottom, win_left:win_right].to(self.device, self.dtype) / 255
            result = self.descriptor(window)  # (1, 3, 4·h, 4·w) in [0, 1], under inference mode
            out[:, top * SCALE : bottom * SCALE, left * SCALE : right * SCALE] = result[
                0,
                :,
                (top - win_top) * SCALE : (bottom - win_top) * SCALE,
                (left - win_left) * SCALE : (right - win_left) * SCALE,
            ].float()
            if progress is not None:
                progress(index + 1, len(rows) * len(cols))
        return out


def _spans(length: int, tile: int) -> list[tuple[int, int]]:
    """[0, length) cut into ⌈length / tile⌉ pieces of near-equal size (448 by 256: 224 + 224, not 256 + 192)."""
    count = -(-length // tile)
    bounds = [length * i // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def compute_dtype(device: torch.device, descriptor: ImageModelDescriptor) -> torch.dtype:
    """fp16 on CUDA, bf16 on CPUs that do it in hardware, else fp32: the fastest type the model supports there."""
    if device.type == 'cuda' and descriptor.supports_half:
        return torch.float16
    if device.type == 'cpu' and descriptor.supports_bfloat16 and cpu.native_bf16_cpu():
        return torch.bfloat16
    return torch.float32


def load_upscaler(path: Path | str, device: str | torch.device = 'cpu', *, dtype: torch.dtype | None = None) -> Upscaler:
    """Read a ×4 super-resolution weights file with spandrel and put it on `device`.

    Raises `FileNotFoundError` when the file is absent (`edalle.upscale.load_upscaler_for` says how to
    install it), and `UpscalerError` when spandrel does not recognise it or it is not a ×4 RGB model.
    `dtype` None picks `compute_dtype`.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f'No upscaler weights at {path}.')
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    try:
        descriptor = ModelLoader().load_from_file(path)
    except UnsupportedModelError:
        raise UpscalerError(f'{path} is not a super-resolution model that spandrel recognises.') from None
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.purpose != 'SR':
        raise UpscalerError(
            f'{path} is a {descriptor.architecture.name} model for {descriptor.purpose}, not super-resolution.'
        )
    if descriptor.scale != SCALE or descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise UpscalerError(
            f'{path} is a ×{descriptor.scale} model with {descriptor.input_channels} input and '
            f'{descriptor.output_channels} output channels; edalle needs ×{SCALE}, RGB in and out.'
        )
    device = torch.device(device)
    return Upscaler(descriptor, device, dtype or compute_dtype(device, descriptor))
