"""Where new pixels meet kept ones: the composite CLIP sees and the user gets, and the seam term of the loss.

Two kinds of canvas, two joins:

- **extend** (a ratio, zoom, pan, square): the source is kept bit for bit in its box and the new
  cells lie outside it. `composite` adds to each new pixel the colour difference source − decode
  measured along the nearest seam, fading out over `feather_px`, so the new cells meet the kept
  picture without a step; `seam_error` asks the decoder to agree with the source in a band just
  inside each seam, which keeps that correction small. Seams are the sides of the source box
  with canvas beyond them; a corner (zoom) blends the two sides' differences.
- **repaint**: the new cells are inside the source. `blend_region` feathers the decode into the
  source over one token outside the region (`region_alpha`); beyond that band every pixel is
  the source's, bit for bit. `region_seam_error` compares decode and source in a band around
  the region.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edalle.expander.canvas import Canvas
from edalle.expander.geometry import TOKEN_PX

SEAM_SAMPLE_PX = 4  # source columns whose colour difference is carried across the seam
SEAM_SMOOTH_PX = 9  # that difference is averaged along the seam over this many pixels
REGION_FEATHER_PX = TOKEN_PX  # a repaint blends into the source over one token outside the region


# ----------------------------------------------------------------------------------------------- extend


def composite(decoded: torch.Tensor, sources: torch.Tensor, canvas: Canvas, feather_px: int) -> torch.Tensor:
    """Decoded canvas (B, 3, H, W) + sources (B, 3, h, w) → the output canvas, source pixels exact in their box.

    Differentiable in `decoded`. The canvas is cut into the source box and the up to eight
    blocks around it (sides and corners), each corrected on its own and concatenated, so a
    side's correction sums over that side's pixels only.
    """
    if canvas.vertical_only:  # the transpose of the sideways case, as it has always been computed
        flipped = composite(decoded.transpose(2, 3), sources.transpose(2, 3), canvas.transposed(), feather_px)
        return flipped.transpose(2, 3)
    left, top, right, bottom = canvas.source_box
    height, width = decoded.shape[-2:]
    inner = decoded[..., top:bottom, left:right]  # (B, 3, h, w): the decoder's own view of the kept picture
    k = SEAM_SAMPLE_PX
    # per-side colour differences along the seam: (B, 3, h, 1) for left/right, (B, 3, 1, w) for top/bottom
    fix = {
        'left': _seam_offset(sources[..., :k] - inner[..., :k]),
        'right': _seam_offset(sources[..., -k:] - inner[..., -k:]),
        'top': _seam_offset((sources[..., :k, :] - inner[..., :k, :]).transpose(2, 3)).transpose(2, 3),
        'bottom': _seam_offset((sources[..., -k:, :] - inner[..., -k:, :]).transpose(2, 3)).transpose(2, 3),
    }
    # distance of each column (row) outside the box to it, at pixel centres: (n,) per block
    before_x, after_x = _distances(left, decoded, reverse=True), _distances(width - right, decoded)
    before_y, after_y = _distances(top, decoded, reverse=True), _distances(height - bottom, decoded)
    columns = (
        ('left', slice(0, left), before_x),
        ('box', slice(left, right), None),
        ('right', slice(right, width), after_x),
    )
    rows = (('top', slice(0, top), before_y), ('box', slice(top, bottom), None), ('bottom', slice(bottom, height), after_y))
    out_rows = []
    for row_side, row_slice, dy in rows:
        blocks = []
        for column_side, column_slice, dx in columns:
            block = decoded[..., row_slice, column_slice]
            if block.shape[-1] == 0 or block.shape[-2] == 0:
                continue
            if row_side == 'box' and column_side == 'box':
                blocks.append(sources)
                continue
            if row_side == 'box':  # beside a left or right seam
                offset, distance = fix[column_side], dx
            elif column_side == 'box':  # above or below a top or bottom seam
                offset, distance = fix[row_side], dy[:, None]  # type: ignore[index]
            else:  # a corner: both seams' differences at the box's corner, weighted by direction
                offset, distance = _corner(fix, row_side, column_side, dx, dy)  # type: ignore[arg-type]
            blocks.append((block + offset * _smoothstep(distance, feather_px)).clamp(0, 1))
        if blocks:
            out_rows.append(torch.cat(blocks, dim=3))
    return torch.cat(out_rows, dim=2) if len(out_rows) > 1 else out_rows[0]


def _corner(
    fix: dict[str, torch.Tensor], row_side: str, column_side: str, dx: torch.Tensor, dy: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A corner block's offset (B, 3, r, c) and distance (r, c) to the box's corner pixel.

    Next to a side seam (dy → 0) the offset is that side's at the corner row; next to a top or
    bottom seam (dx → 0) that seam's at the corner column: continuous with both neighbours.
    """
    side = fix[column_side][..., :1, :] if row_side == 'top' else fix[column_side][..., -1:, :]  # (B, 3, 1, 1)
    end = fix[row_side][..., :, :1] if column_side == 'left' else fix[row_side][..., :, -1:]  # (B, 3, 1, 1)
    dx2, dy2 = dx[None, :], dy[:, None]  # (1, c), (r, 1)
    offset = (dx2 * side + dy2 * end) / (dx2 + dy2)
    return offset, (dx2 * dx2 + dy2 * dy2).sqrt()


def _distances(count: int, like: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """(count,) pixel-centre distances to the box: 0.5, 1.5, … away from it (`reverse`: the box is after them)."""
    if reverse:
        return torch.arange(count, 0, -1, device=like.device, dtype=like.dtype) - 0.5
    return torch.arange(1, count + 1, device=like.device, dtype=like.dtype) - 0.5


def _smoothstep(distance: torch.Tensor, feather_px: int) -> torch.Tensor:
    """Weights 1 − smoothstep: ~1 next to the seam, 0 from `feather_px` away."""
    t = (1 - distance / max(feather_px, 1)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _seam_offset(difference: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, k) → (B, 3, h, 1): mean over the k columns, then a box blur along the seam."""
    column = difference.mean(dim=3)  # (B, 3, h)
    pad = SEAM_SMOOTH_PX // 2
    smooth = F.avg_pool1d(F.pad(column, (pad, pad), mode='replicate'), SEAM_SMOOTH_PX, stride=1)
    return smooth.unsqueeze(3)


def seam_error(decoded: torch.Tensor, sources: torch.Tensor, canvas: Canvas, band_px: int) -> torch.Tensor:
    """(B,) mean squared difference between the decode and the source in the `band_px` inside each seam."""
    if canvas.vertical_only:
        return seam_error(decoded.transpose(2, 3), sources.transpose(2, 3), canvas.transposed(), band_px)
    left, top, right, bottom = canvas.source_box
    inner = decoded[..., top:bottom, left:right]
    difference = inner - sources  # (B, 3, h, w)
    wide, tall = min(band_px, difference.shape[-1]), min(band_px, difference.shape[-2])
    strips = {
        'left': difference[..., :wide],
        'right': difference[..., -wide:],
        'top': difference[..., :tall, :].transpose(2, 3),
        'bottom': difference[..., -tall:, :].transpose(2, 3),
    }
    chosen = [strips[side] for side in canvas.sides]
    if all(s.shape == chosen[0].shape for s in chosen):  # the two side bands of a ratio: as always computed
        return torch.cat(chosen, 3).pow(2).mean(dim=(1, 2, 3))
    return torch.cat([s.flatten(1) for s in chosen], 1).pow(2).mean(dim=1)


# ----------------------------------------------------------------------------------------------- repaint


def region_alpha(canvas: Canvas, device: torch.device | str = 'cpu') -> torch.Tensor:
    """(H, W) float: 1 on the free cells, falling smoothly to 0 across one token outside them, 0 beyond.

    Euclidean distance from each pixel centre to the region. Within one token of a region only
    the 8 cells around a pixel's own cell can be the nearest, so each direction's distance is
    a fixed 16×16 pattern, used where the neighbour in that direction is free.
    """
    free = torch.as_tensor(canvas.free_mask(), device=device)  # (rows, columns)
    rows, columns = free.shape
    centre = torch.arange(TOKEN_PX, device=device, dtype=torch.float32) + 0.5  # pixel centres in a cell
    toward = {-1: centre, 0: torch.zeros_like(centre), 1: TOKEN_PX - centre}  # distance to the neighbour's edge
    distance = torch.full((rows * TOKEN_PX, columns * TOKEN_PX), float('inf'), device=device)
    padded = F.pad(free[None, None].float(), (1, 1, 1, 1))[0, 0].bool()
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di == 0 and dj == 0:
                continue
            neighbour = padded[1 + di : 1 + di + rows, 1 + dj : 1 + dj + columns]  # (rows, columns)
            pattern = (toward[di][:, None] ** 2 + toward[dj][None, :] ** 2).sqrt()  # (16, 16)
            here = neighbour.repeat_interleave(TOKEN_PX, 0).repeat_interleave(TOKEN_PX, 1)
            distance = torch.where(here, torch.minimum(distance, pattern.repeat(rows, columns)), distance)
    inside = free.repeat_interleave(TOKEN_PX, 0).repeat_interleave(TOKEN_PX, 1)
    alpha = _smoothstep(distance.clamp(max=2 * REGION_FEATHER_PX), REGION_FEATHER_PX)
    return torch.where(inside, torch.ones_like(alpha), alpha)


def blend_region(decoded: torch.Tensor, sources: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Decoded (B, 3, H, W) feathered into the sources by `alpha` (H, W); where alpha is 0 the source exactly."""
    mixed = sources + alpha * (decoded - sources)
    return torch.where(alpha > 0, mixed, sources)


def region_seam_error(decoded: torch.Tensor, sources: torch.Tensor, canvas: Canvas, band_px: int) -> torch.Tensor:
    """(B,) mean squared difference between decode and source in the `band_px` (in whole tokens) around the region."""
    band = region_band(canvas, band_px, decoded.device)
    count = band.sum().clamp(min=1) * decoded.shape[1]
    return ((decoded - sources).pow(2) * band).sum(dim=(1, 2, 3)) / count


def region_band(canvas: Canvas, band_px: int, device: torch.device | str = 'cpu') -> torch.Tensor:
    """(H, W) float 0/1: the cells within ⌈band_px / 16⌉ tokens of the region, outside it."""
    free = torch.as_tensor(canvas.free_mask(), device=device)[None, None].float()
    reach = max(1, -(-band_px // TOKEN_PX))
    grown = F.max_pool2d(free, 2 * reach + 1, stride=1, padding=reach)
    band = (grown - free)[0, 0]
    return band.repeat_interleave(TOKEN_PX, 0).repeat_interleave(TOKEN_PX, 1)


# ----------------------------------------------------------------------------------------------- any


def moving_pixels(canvas: Canvas, device: torch.device | str = 'cpu') -> torch.Tensor:
    """(H, W) bool: the pixels of the image CLIP sees that depend on the free latents.

    extend: everything outside the source box (the box is the source itself); repaint: the
    region and its feather band; dream: everything.
    """
    height, width = canvas.height, canvas.width
    mode = canvas.mode
    if mode == 'dream':
        return torch.ones(height, width, dtype=torch.bool, device=device)
    if mode == 'repaint':
        return region_alpha(canvas, device) > 0
    left, top, right, bottom = canvas.source_box
    moving = torch.ones(height, width, dtype=torch.bool, device=device)
    moving[top:bottom, left:right] = False
    return moving
