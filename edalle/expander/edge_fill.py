"""First guesses for the new sides, before any optimisation.

`edge_fill` is the original E-DALL-E notebook's initialisation, reproduced with the same PIL
operations so its numbers match: each new band is one colour per row, the antialiased
BILINEAR mean of the source's 8 outermost pixels on that row, and the source's own outer
32 px are cross-faded into that colour. Tall canvases are the exact transpose.

`soft_mirror_fill` is the default method's initialisation for new cells around a source. The
original's per-row colour gives horizontal streaks that 200 low-lr steps often fail to remove.
A mirror image of the source, blurred to token scale, carries the same colours plus the
coarse 2-D layout (a horizon stays a horizon, a dark corner stays dark) without duplicating sharp
objects, and it leaves the source itself untouched. `region_fill` is a repaint's 'remove' start:
the region filled with a blur of what surrounds it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from edalle.expander.canvas import Canvas, canvas_from_geometry
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


def soft_mirror_fill(source: torch.Tensor, canvas: Canvas | Geometry, blur_px: int = TOKEN_PX) -> torch.Tensor:
    """(B, 3, h, w) source in [0, 1] → (B, 3, H, W) canvas: the source, and blurred mirror images around it.

    The mirror is blurred by averaging `blur_px` squares and resizing back (bilinear), so the
    new cells hold the source's colours and coarse shapes at token scale, not its details. On
    a zoom the source is mirrored across both axes, so a corner holds its point-mirror image.
    """
    if isinstance(canvas, Geometry):
        canvas = canvas_from_geometry(canvas)
    if canvas.vertical_only:  # exactly the transpose of the sideways case, as it has always been computed
        return soft_mirror_fill(source.transpose(2, 3), canvas.transposed(), blur_px).transpose(2, 3)
    left, top, right, bottom = canvas.source_box
    height, width = canvas.height, canvas.width
    rows = _mirror_indices(top, height, source.shape[-2], source.device)
    columns = _mirror_indices(left, width, source.shape[-1], source.device)
    mirrored = source[..., rows, :][..., columns]  # (B, 3, H, W)
    blurred = F.avg_pool2d(mirrored, blur_px)
    blurred = F.interpolate(blurred, size=mirrored.shape[-2:], mode='bilinear', align_corners=False)
    canvas_pixels = blurred.clone()
    canvas_pixels[..., top:bottom, left:right] = source
    return canvas_pixels


def _mirror_indices(start: int, length: int, size: int, device: torch.device) -> torch.Tensor:
    """Source indices for canvas positions 0 … length − 1 with the source at `start`: (…, 1, 0 | 0, 1, …, n−1 | n−1, …).

    Period 2n, so any amount of new canvas works.
    """
    positions = torch.arange(-start, length - start, device=device) % (2 * size)
    return torch.where(positions < size, positions, 2 * size - 1 - positions)


def region_fill(source: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) picture, (H, W) bool pixels to remove → the picture with the region filled from around it.

    A repaint's 'remove' start: at token scale, each cell of the region takes the mean colour of
    its known neighbours, growing inwards ring by ring until the region is full; the result is
    resized back (bilinear), so the region holds a blur of its surroundings and nothing of what
    was there. Pixels outside the region are the source's.
    """
    known = (~region).to(source.dtype)[None, None]  # (1, 1, H, W)
    colour = F.avg_pool2d(source * known, TOKEN_PX)  # (B, 3, h, w): known colour sum per token, ÷ 256
    weight = F.avg_pool2d(known, TOKEN_PX)  # (1, 1, h, w): known share per token
    for _ in range(max(weight.shape[-2:])):
        empty = weight <= 0
        if not bool(empty.any()):
            break
        colour = torch.where(empty, F.avg_pool2d(colour, 3, stride=1, padding=1), colour)
        weight = torch.where(empty, F.avg_pool2d(weight, 3, stride=1, padding=1), weight)
    tone = colour / weight.clamp(min=1e-12)
    smooth = F.interpolate(tone, size=source.shape[-2:], mode='bilinear', align_corners=False)
    return torch.where(region[None, None], smooth, source)
