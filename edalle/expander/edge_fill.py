"""First guesses for the new sides, before any optimisation.

`edge_fill` is the original E-DALL-E notebook's initialisation, reproduced with the same PIL
operations so its numbers match: each new band is one colour per row, the antialiased
BILINEAR mean of the source's 8 outermost pixels on that row, and the source's own outer
32 px are cross-faded into that colour. Tall canvases are the exact transpose.

`soft_mirror_fill` is the default method's initialisation. The original's per-row colour
gives horizontal streaks that 200 low-lr steps often fail to remove. A mirror image
of the source, blurred to token scale, carries the same colours plus the coarse 2-D layout
(a horizon stays a horizon, a dark corner stays dark) without duplicating sharp objects,
and it leaves the source itself untouched.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from edalle.expander.geometry import TOKEN_PX, Geometry

EDGE_SAMPLE_PX = 8  # source pixels averaged into each row's fill colour
CROSSFADE_PX = 32  # source pixels blended towards the fill, inside the source (2 tokens)


def edge_fill(source: Image.Image, geometry: Geometry) -> Image.Image:
    """The original's padded canvas (uint8 RGB, geometry.size), source in the centre."""
    if geometry.orientation == 'tall':
        wide = edge_fill(source.transpose(Image.Transpose.TRANSPOSE), geometry.transposed())
        return wide.transpose(Image.Transpose.TRANSPOSE)
    width, height = geometry.size
    left_px, top_px, right_px, bottom_px = geometry.source_box
    source = source.convert('RGB')
    if source.size != (right_px - left_px, bottom_px - top_px):
        raise ValueError(f'source is {source.size}, the geometry expects {(right_px - left_px, bottom_px - top_px)}')
    source_width = source.width
    pad = left_px
    canvas = Image.new('RGB', (width, height))
    canvas.paste(source, (pad, 0))
    # 8 → 1 column (a triangle-weighted mean, PIL downscales with antialiasing), H → H/2 → H rows.
    left_band = _row_colours(source.crop((0, 0, EDGE_SAMPLE_PX, height)), pad, height)
    right_band = _row_colours(source.crop((source_width - EDGE_SAMPLE_PX, 0, source_width, height)), pad, height)
    canvas.paste(left_band, (0, 0))
    canvas.paste(right_band, (width - pad, 0))

    pixels = np.asarray(canvas, dtype=np.float32).copy()  # (H, W, 3)
    ramp = (np.arange(CROSSFADE_PX, dtype=np.float32) / CROSSFADE_PX)[None, :, None]  # 0 … 31/32, never 1
    # The fill colour resized to 32 columns with PIL's default filter: a no-op on constant rows.
    left_fill = np.asarray(left_band.resize((CROSSFADE_PX, height)), dtype=np.float32)
    right_fill = np.asarray(right_band.resize((CROSSFADE_PX, height)), dtype=np.float32)
    inner = slice(pad, pad + CROSSFADE_PX)  # columns 96–127 for 16:9: pure fill → 31/32 source
    pixels[:, inner] = ramp * pixels[:, inner] + (1 - ramp) * left_fill
    outer = slice(width - pad - CROSSFADE_PX, width - pad)  # 320–351: pure source → 31/32 fill
    pixels[:, outer] = (1 - ramp) * pixels[:, outer] + ramp * right_fill
    return Image.fromarray(pixels.astype(np.uint8), 'RGB')  # truncation, as the original


def _row_colours(strip: Image.Image, band_width: int, height: int) -> Image.Image:
    """An edge strip → a band of `band_width` columns, one colour per row."""
    column = strip.resize((1, height // 2), Image.Resampling.BILINEAR)
    return column.resize((band_width, height), Image.Resampling.BILINEAR)


def soft_mirror_fill(source: torch.Tensor, geometry: Geometry, blur_px: int = TOKEN_PX) -> torch.Tensor:
    """(B, 3, h, w) source in [0, 1] → (B, 3, H, W) canvas: the source, and blurred mirror images beside it.

    The mirror is blurred by averaging `blur_px` squares and resizing back (bilinear), so the
    sides hold the source's colours and coarse shapes at token scale, not its details.
    """
    if geometry.orientation == 'tall':
        return soft_mirror_fill(source.transpose(2, 3), geometry.transposed(), blur_px).transpose(2, 3)
    b, _, h, w = source.shape
    pad = geometry.source_box[0]
    # Reflect indices (…, 1, 0 | 0, 1, …, w-1 | w-1, w-2, …) with period 2w, so any pad works.
    positions = torch.arange(-pad, w + pad, device=source.device) % (2 * w)
    mirrored = source[..., torch.where(positions < w, positions, 2 * w - 1 - positions)]  # (B, 3, H, W)
    blurred = F.avg_pool2d(mirrored, blur_px)
    blurred = F.interpolate(blurred, size=mirrored.shape[-2:], mode='bilinear', align_corners=False)
    canvas = blurred.clone()
    canvas[..., pad : pad + w] = source
    return canvas
