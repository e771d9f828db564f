"""The original's edge-fill initialisation, in numbers, and the default method's mirror fill."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from edalle.expander.edge_fill import edge_fill, soft_mirror_fill
from edalle.expander.geometry import compute_geometry


def _synthetic() -> Image.Image:
    """Grey 100 with one bright column 7 (left edge strip) and 248 (right edge strip); rows identical."""
    pixels = np.full((256, 256, 3), 100, np.uint8)
    pixels[:, :7] = 0
    pixels[:, 7] = 255
    pixels[:, 248] = 255
    pixels[:, 249:] = 0
    return Image.fromarray(pixels)


def test_edge_colour_is_the_triangle_weighted_mean_of_8_columns() -> None:
    canvas = np.asarray(edge_fill(_synthetic(), compute_geometry('16:9'))).astype(int)
    assert canvas.shape == (256, 448, 3)
    # PIL's antialiased 8 → 1 column: the outermost sample weighs ≈ 0.094, so 255 · 0.094 ≈ 24
    assert (canvas[:, :96] == 24).all()
    assert (canvas[:, 352:] == 24).all()


def test_cross_fade_inside_the_source() -> None:
    canvas = np.asarray(edge_fill(_synthetic(), compute_geometry('16:9'))).astype(int)
    row = canvas[10, :, 0]
    ramp = np.arange(32) / 32
    source = np.asarray(_synthetic())[10, :, 0].astype(float)
    # left: column 96 + j = r_j · source + (1 − r_j) · fill, truncated
    assert (row[96:128] == np.floor(ramp * source[:32] + (1 - ramp) * 24)).all()
    assert row[96] == 24 and row[127] == int(31 / 32 * 100 + 24 / 32)
    # right: column 320 + j = (1 − r_j) · source + r_j · fill
    assert (row[320:352] == np.floor((1 - ramp) * source[224:] + ramp * 24)).all()
    assert row[320] == 100 and row[351] == int(31 / 32 * 24)
    # only the inner 192 px of the source pass untouched
    assert (row[128:320] == source[32:224]).all()


def test_tall_edge_fill_is_the_transpose() -> None:
    wide = np.asarray(edge_fill(_synthetic(), compute_geometry('16:9')))
    tall = np.asarray(edge_fill(_synthetic().transpose(Image.Transpose.TRANSPOSE), compute_geometry('9:16')))
    assert tall.shape == (448, 256, 3)
    assert (tall.transpose(1, 0, 2) == wide).all()


def test_soft_mirror_fill_keeps_the_source_and_blurs_the_sides() -> None:
    source = torch.rand(2, 3, 256, 256)
    for ratio in ('16:9', '9:16', '3:1'):
        geometry = compute_geometry(ratio)
        canvas = soft_mirror_fill(source, geometry)
        left, top, right, bottom = geometry.source_box
        assert canvas.shape == (2, 3, geometry.height, geometry.width)
        assert torch.equal(canvas[..., top:bottom, left:right], source)
        # the sides are token-scale blurs: much less variance than the noise source
        side = canvas[..., :top, :] if geometry.orientation == 'tall' else canvas[..., :left]
        assert side.std() < 0.5 * source.std()
