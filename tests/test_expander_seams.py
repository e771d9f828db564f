"""Joins between new and kept pixels on any canvas: the extend composite (sides and corners), seam terms, region feather."""

from __future__ import annotations

import pytest
import torch

from edalle.expander.canvas import canvas_for_pan, canvas_for_ratio, canvas_for_region, canvas_for_zoom
from edalle.expander.cutouts import EvenCutouts, EvenCutoutSettings
from edalle.expander.default import views_needing_grad
from edalle.expander.seams import (
    blend_region,
    composite,
    moving_pixels,
    region_alpha,
    region_band,
    region_seam_error,
    seam_error,
)


def test_composite_feathers_the_seam_without_touching_the_source() -> None:
    canvas = canvas_for_ratio((256, 256), '16:9')
    source = torch.full((1, 3, 256, 256), 0.6)
    decoded = torch.full((1, 3, 256, 448), 0.4)  # the decoder is 0.2 darker everywhere
    out = composite(decoded, source, canvas, feather_px=32)
    assert torch.equal(out[..., 96:352], source)
    assert out[0, 0, 100, 95] == pytest.approx(0.6, abs=0.01)  # next to the seam: matched to the source
    assert out[0, 0, 100, 60] == pytest.approx(0.4, abs=1e-6)  # feather_px away: the decode itself
    assert out[0, 0, 100, 352] == pytest.approx(0.6, abs=0.01)
    tall = composite(decoded.transpose(2, 3), source, canvas_for_ratio((256, 256), '9:16'), feather_px=32)
    assert torch.equal(tall, out.transpose(2, 3))


def test_zoom_composite_matches_all_four_sides_and_the_corners() -> None:
    canvas = canvas_for_zoom((128, 128), 2.0)  # 256 × 256, source at 64 … 192
    source = torch.full((1, 3, 128, 128), 0.6)
    decoded = torch.full((1, 3, 256, 256), 0.4, requires_grad=True)
    out = composite(decoded, source, canvas, feather_px=32)
    assert out.shape == (1, 3, 256, 256)
    shown = out.detach()
    assert torch.equal(shown[..., 64:192, 64:192], source)
    for y, x in ((100, 63), (100, 192), (63, 100), (192, 100), (63, 63), (192, 192), (63, 192)):
        assert float(shown[0, 0, y, x]) == pytest.approx(0.6, abs=0.02), (y, x)  # next to a seam or a corner
    for y, x in ((100, 10), (10, 100), (10, 10), (250, 250)):
        assert float(shown[0, 0, y, x]) == pytest.approx(0.4, abs=1e-6), (y, x)  # far from the box
    # the correction falls off smoothly with the distance to the box, also diagonally
    diagonal = torch.stack([shown[0, 0, 63 - d, 63 - d] for d in range(30)])
    assert (diagonal[1:] <= diagonal[:-1] + 1e-6).all()
    out.sum().backward()  # differentiable, and the source box passes no gradient
    assert decoded.grad is not None and decoded.grad[..., 100, 10].abs().sum() > 0


def test_pan_composite_and_seam_error_use_only_the_open_side() -> None:
    canvas = canvas_for_pan((128, 128), 'right')  # 192 × 128: one seam at x = 128
    source = torch.rand(1, 3, 128, 128)
    decoded = torch.rand(1, 3, 128, 192)
    decoded[..., :128] = source  # the decoder agrees with the source everywhere inside
    assert seam_error(decoded, source, canvas, 32).item() == 0.0
    out = composite(decoded, source, canvas, feather_px=32)
    assert torch.equal(out[..., :128], source)
    decoded[..., 100:128] += 0.1  # a disagreement inside the seam band
    assert seam_error(decoded, source, canvas, 32).item() == pytest.approx(0.01 * 28 / 32, rel=1e-4)
    decoded[..., :60] += 0.5  # … but not outside it
    assert seam_error(decoded, source, canvas, 32).item() == pytest.approx(0.01 * 28 / 32, rel=1e-4)


def test_region_alpha_feathers_over_one_token() -> None:
    canvas = canvas_for_region((256, 256), 'B2')  # tokens 4–7: pixels 64–127
    alpha = region_alpha(canvas)
    assert alpha.shape == (256, 256)
    assert (alpha[64:128, 64:128] == 1).all()
    assert (alpha[:, :48] == 0).all() and (alpha[144:] == 0).all()  # beyond one token: nothing
    row = alpha[96, 128:144]  # leaving the region to the right
    assert (row > 0).all() and (row[1:] < row[:-1]).all() and row[0] > 0.9
    assert 0 < alpha[130, 130] < alpha[129, 129]  # diagonally, by Euclidean distance
    assert alpha[143, 143] == 0  # a corner pixel more than a token away (15.5·√2)


def test_blend_keeps_pixels_beyond_the_band_bit_for_bit() -> None:
    canvas = canvas_for_region((256, 256), 'B2:C3')
    source, decoded = torch.rand(2, 3, 256, 256), torch.rand(2, 3, 256, 256)
    out = blend_region(decoded, source, region_alpha(canvas))
    outside = region_alpha(canvas) == 0
    assert torch.equal(out[..., outside], source[..., outside])
    assert torch.allclose(out[..., 64:192, 64:192], decoded[..., 64:192, 64:192], atol=1e-6)
    band = region_band(canvas, 32)
    assert band[48:64, 100].eq(1).all() and band[64:192, 64:192].eq(0).all() and band[:32].eq(0).all()
    same = decoded.clone()
    same[..., band.bool()] = source[..., band.bool()]
    assert torch.equal(region_seam_error(same, source, canvas, 32), torch.zeros(2))
    assert (region_seam_error(decoded, source, canvas, 32) > 0).all()


def test_views_that_miss_the_region_carry_no_gradient() -> None:
    canvas = canvas_for_region((448, 256), 'A1')
    moving = moving_pixels(canvas)
    assert moving[:64, :80].all() and moving[:80, :64].all()  # the cell and its one-token band …
    assert not moving[80:].any() and not moving[:, 80:].any() and not moving[79, 79]  # … measured as a circle
    canvas_pixels = torch.rand(1, 3, 256, 448, requires_grad=True)
    image = blend_region(canvas_pixels, torch.rand(1, 3, 256, 448), region_alpha(canvas))
    views = EvenCutouts(EvenCutoutSettings(cutn=16, cut_size=32))
    pixels, reach = views.sample(image, [torch.Generator().manual_seed(3)], focus=canvas.focus_box())
    needs = views_needing_grad(reach, moving)
    assert needs.any() and (~needs).any()
    for k in (~needs).nonzero().squeeze(1).tolist():
        (grad,) = torch.autograd.grad(pixels[k].sum(), canvas_pixels, retain_graph=True)
        assert not grad.any()


def test_focus_views_hold_the_region() -> None:
    views = EvenCutouts(EvenCutoutSettings(cutn=8))
    focus = (64, 64, 128, 128)
    boxes = views.boxes(256, 448, torch.Generator().manual_seed(0), focus=focus)
    for x0, y0, side in boxes[:4].tolist():  # half of them on the focus box, holding it
        assert x0 <= 64 and y0 <= 64 and x0 + side >= 128 and y0 + side >= 128 and side <= 256
    plain = views.boxes(256, 448, torch.Generator().manual_seed(0))
    assert torch.equal(boxes[4:], plain[4:])  # the rest are the even tiles, unchanged
    within = views.boxes(256, 896, torch.Generator().manual_seed(0), within=(512, 0, 896, 256))
    assert (within[:, 0] >= 512).all() and (within[:, 0] + within[:, 2] <= 896).all()
