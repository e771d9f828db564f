"""Cutouts: the original's (count, sizes, coverage) and the default method's even, one-resample views."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edalle.expander.cutouts import (
    ClassicCutouts,
    EvenCutouts,
    EvenCutoutSettings,
    coverage,
    lanczos_kernel,
    resample,
)


def test_classic_cutouts_count_and_sizes() -> None:
    torch.manual_seed(0)
    cutouts = ClassicCutouts()  # the original: 224 px, 64 cutouts, cut_pow 1
    assert (cutouts.cut_size, cutouts.cutn, cutouts.cut_pow) == (224, 64, 1.0)
    boxes = cutouts.boxes(256, 448)
    assert len(boxes) == 64
    sides = [side for _, _, side in boxes]
    assert min(sides) >= 224 and max(sides) <= 255
    assert all(0 <= x0 <= 448 - side and 0 <= y0 <= 256 - side for x0, y0, side in boxes)
    # augmentations in the original's order
    names = [type(m).__name__ for m in cutouts.augment]
    assert names == ['RandomHorizontalFlip', 'RandomSharpness', 'RandomAffine', 'RandomPerspective', 'ColorJitter']


def test_classic_cutouts_shape() -> None:
    torch.manual_seed(0)
    views = ClassicCutouts(cutn=3)(torch.rand(1, 3, 256, 448))
    assert views.shape == (3, 3, 224, 224)


def test_classic_coverage_starves_the_edges() -> None:
    torch.manual_seed(0)
    cutouts = ClassicCutouts()
    boxes = [box for _ in range(40) for box in cutouts.boxes(256, 448)]
    seen = coverage(boxes, 448)
    assert seen[0] < 0.02 and seen[447] < 0.02  # ≈ 0.5 %: the outer columns are almost never seen
    assert seen[224] > 0.99


def test_even_coverage_reaches_the_edges() -> None:
    cutouts = EvenCutouts()
    generator = torch.Generator().manual_seed(0)
    for width in (352, 448, 608, 768):
        boxes = torch.cat([cutouts.boxes(256, width, generator) for _ in range(60)])
        seen = coverage(boxes, width)
        assert seen.min() > 0.2, width
        assert seen.max() / seen.min() < 2.2, width
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= width).all()


def test_even_views_without_augmentation_are_the_crops() -> None:
    """With flips, rotation, perspective, colour and noise off, one grid_sample is a plain crop + resize."""
    settings = EvenCutoutSettings(
        cutn=4, flip_p=0.0, max_degrees=0.0, max_keystone=0.0, brightness=0.0, contrast=0.0, saturation=0.0, noise_max=0.0
    )
    cutouts = EvenCutouts(settings)
    pixels = torch.rand(2, 3, 256, 448)
    views = cutouts(pixels, [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    assert views.shape == (8, 3, 224, 224)
    boxes = cutouts.boxes(256, 448, torch.Generator().manual_seed(2))
    for k, (x0, y0, side) in enumerate(boxes.round().long().tolist()):
        crop = pixels[1:2, :, y0 : y0 + side, x0 : x0 + side]
        expected = F.interpolate(crop, size=(224, 224), mode='bilinear', align_corners=False)
        assert (views[4 + k] - expected[0]).abs().mean() < 0.02


def test_even_views_depend_only_on_their_own_seed() -> None:
    cutouts = EvenCutouts(EvenCutoutSettings(cutn=3))
    pixels = torch.rand(2, 3, 256, 448)
    both = cutouts(pixels, [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)])
    alone = cutouts(pixels[1:], [torch.Generator().manual_seed(6)])
    assert torch.allclose(both[3:], alone, atol=1e-4)


def test_lanczos_prefilter() -> None:
    kernel = lanczos_kernel(224 / 255)
    assert abs(float(kernel.sum()) - 1) < 1e-6
    assert torch.allclose(kernel, kernel.flip(0))
    flat = torch.full((1, 3, 255, 255), 0.5)
    assert torch.allclose(resample(flat, (224, 224)), torch.full((1, 3, 224, 224), 0.5), atol=1e-5)


def test_view_reach_bounds_what_each_view_reads() -> None:
    """A view's gradient reaches canvas columns only inside its reported reach (plus the bilinear neighbour)."""
    views = EvenCutouts(EvenCutoutSettings(cutn=12, cut_size=32))
    canvas = torch.rand(1, 3, 64, 112, requires_grad=True)
    pixels, reach = views.sample(canvas, [torch.Generator().manual_seed(5)], [torch.Generator().manual_seed(6)])
    assert pixels.shape == (12, 3, 32, 32) and reach.shape == (12, 4)
    assert torch.equal(pixels, views(canvas, [torch.Generator().manual_seed(5)], [torch.Generator().manual_seed(6)]))
    for k in range(12):
        (grad,) = torch.autograd.grad(pixels[k].sum(), canvas, retain_graph=True)
        read = grad.abs().sum(dim=(0, 1, 2)).nonzero().squeeze(1)  # columns with any gradient
        x_min, x_max = float(reach[k, 0]), float(reach[k, 1])
        if x_min >= 0 and x_max <= 111:  # inside the canvas: no reflection
            assert read.min() >= int(x_min) and read.max() <= int(x_max) + 1
