"""Decode only what a step needs: the canvas's decode windows (`Canvas.decode_windows`), one decoder call per window size.

The decoder's forward and backward are the largest cost of a step after CLIP, and the kept
picture is replaced by the source anyway, so only the free cells and the few tokens of context
that the seam needs are decoded: a pan's step costs what its new band costs, however wide the
picture already is. Windows of one size go through the decoder as one batch; the rest of the
returned canvas is `base` (the sources where they are kept).
"""

from __future__ import annotations

import torch

from edalle.expander.canvas import Rect
from edalle.expander.geometry import TOKEN_PX


def decode_windows(
    vqgan: torch.nn.Module,
    latents: torch.Tensor,
    base: torch.Tensor,
    windows: tuple[Rect, ...],
    amp: torch.autocast,
) -> torch.Tensor:
    """(B, D, rows, columns) latents → (B, 3, H, W) float: `windows` decoded, `base` (B, 3, H, W) elsewhere.

    One window covering the whole canvas is a plain decode. Otherwise windows of equal size are
    stacked along the batch (window-major: all images' first window, then their second) and
    decoded together; the decoder's convolutions reach a few tokens, so a window's pixels see
    the neighbourhood they would see in the canvas; only its global attention and GroupNorm see
    the window rather than the canvas.
    """
    rows, columns = latents.shape[-2:]
    if windows == ((0, 0, rows, columns),):
        with amp:
            return vqgan.decode_latents(latents).float()
    batch = latents.shape[0]
    groups: dict[tuple[int, int], list[Rect]] = {}
    for window in windows:
        top, left, bottom, right = window
        groups.setdefault((bottom - top, right - left), []).append(window)
    out = base.clone()
    for group in groups.values():
        stacked = torch.cat([latents[..., top:bottom, left:right] for top, left, bottom, right in group])  # (n·B, D, h, w)
        with amp:
            pixels = vqgan.decode_latents(stacked).float()
        for (top, left, bottom, right), part in zip(group, pixels.split(batch), strict=True):
            out[..., top * TOKEN_PX : bottom * TOKEN_PX, left * TOKEN_PX : right * TOKEN_PX] = part
    return out
