"""Square views of the canvas that CLIP looks at, with their augmentations.

`ClassicCutouts` is the original E-DALL-E notebook's `MakeCutouts` (from Katherine Crowson's
VQGAN+CLIP) step for step: a Python loop of random squares of 224–255 px, each resampled on
its own (Lanczos-2 prefilter, then bicubic), then five kornia augmentations and per-cutout
noise. Its squares are placed uniformly among the positions that fit, so the canvas's outer
columns are almost never seen (0.5 % for x = 0 on 448 × 256;
`tests/test_expander_cutouts.py` measures it).

`EvenCutouts` is the default method's: every view is one affine-plus-perspective map from
the canvas, so crop, resize, flip, rotation and perspective are a single `grid_sample` for
all views of all images at once, and the colour jitter is one 3×3 colour matrix per view.
Views are tiles whose end positions touch the canvas edges, so every column and row is
covered about equally often (see `EvenCutouts.boxes` and `coverage`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)  # grey of the saturation and contrast jitter (torchvision's, kornia's)
Box = tuple[int, int, int, int]  # (left, top, right, bottom) in canvas pixels, PIL's order


# ----------------------------------------------------------------------------------------------- classic


def lanczos_kernel(scale: float, a: int = 2) -> torch.Tensor:
    """The anti-alias prefilter for shrinking by `scale` (< 1): Lanczos-a sampled every `scale`, summing to 1."""
    half = math.ceil(a / scale)
    x = torch.arange(-half, half + 1, dtype=torch.float64) * scale
    kernel = torch.where(x.abs() < a, torch.sinc(x) * torch.sinc(x / a), torch.zeros_like(x))
    return (kernel / kernel.sum()).float()


def resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) → (B, C, *size): Lanczos-2 prefilter along each axis that shrinks, then bicubic (align_corners)."""
    b, c, h, w = x.shape
    out_h, out_w = size
    x = x.reshape(b * c, 1, h, w)
    if out_h < h:
        kernel = lanczos_kernel(out_h / h).to(x)
        pad = kernel.numel() // 2
        x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode='reflect'), kernel.view(1, 1, -1, 1))
    if out_w < w:
        kernel = lanczos_kernel(out_w / w).to(x)
        pad = kernel.numel() // 2
        x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode='reflect'), kernel.view(1, 1, 1, -1))
    x = x.reshape(b, c, x.shape[-2], x.shape[-1])
    return F.interpolate(x, size=size, mode='bicubic', align_corners=True)


def classic_augmentations() -> torch.nn.Module:
    """The five kornia augmentations of E-DALL-E's cutouts, in the original's order and settings."""
    import kornia.augmentation as K

    return torch.nn.Sequential(
        K.RandomHorizontalFlip(p=0.5),
        K.RandomSharpness(0.3, p=0.4),
        K.RandomAffine(degrees=30, translate=(0.1, 0.1), p=0.8, padding_mode='border'),
        K.RandomPerspective(0.2, p=0.4),
        K.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1, p=1.0),
    )


class ClassicCutouts:
    """The original `MakeCutouts(cut_size=224, cutn=64, cut_pow=1)`; randomness from torch's global RNG."""

    def __init__(self, cut_size: int = 224, cutn: int = 64, cut_pow: float = 1.0, noise_max: float = 0.1) -> None:
        self.cut_size = cut_size
        self.cutn = cutn
        self.cut_pow = cut_pow
        self.noise_max = noise_max
        self.augment = classic_augmentations()

    def boxes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """(x0, y0, side) of each square: side = ⌊u^cut_pow·(max − min) + min⌋, offsets uniform where it fits."""
        max_size = min(width, height)
        min_size = min(width, height, self.cut_size)
        out = []
        for _ in range(self.cutn):
            side = int(torch.rand([]) ** self.cut_pow * (max_size - min_size) + min_size)
            x0 = int(torch.randint(0, width - side + 1, ()))
            y0 = int(torch.randint(0, height - side + 1, ()))
            out.append((x0, y0, side))
        return out

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) in [0, 1] → (cutn, 3, cut_size, cut_size), augmented and noised."""
        height, width = pixels.shape[-2:]
        cutouts = [
            resample(pixels[:, :, y0 : y0 + side, x0 : x0 + side], (self.cut_size, self.cut_size))
            for x0, y0, side in self.boxes(height, width)
        ]
        batch = self.augment(torch.cat(cutouts))
        factors = batch.new_empty([self.cutn, 1, 1, 1]).uniform_(0, self.noise_max)
        return batch + factors * torch.randn_like(batch)


# ----------------------------------------------------------------------------------------------- even


@dataclass(frozen=True)
class EvenCutoutSettings:
    """How the default method's views are drawn. Sizes are fractions of the canvas's short side."""

    cutn: int = 32
    cut_size: int = 224
    min_fraction: float = 0.6
    max_fraction: float = 1.0
    flip_p: float = 0.5
    max_degrees: float = 10.0
    max_keystone: float = 0.1  # projective terms of the perspective jitter
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    noise_max: float = 0.1
    focus_share: float = 0.5  # of the views, when a focus box is given (a repaint's region)


class EvenCutouts:
    """Views that cover the whole canvas evenly, made for a whole batch in one `grid_sample`.

    Randomness comes from one `torch.Generator` per image, so an image's views depend only on
    its own seed, whatever else shares the batch.
    """

    def __init__(self, settings: EvenCutoutSettings | None = None) -> None:
        self.settings = settings or EvenCutoutSettings()

    def boxes(
        self,
        height: int,
        width: int,
        generator: torch.Generator,
        within: Box | None = None,
        focus: Box | None = None,
    ) -> torch.Tensor:
        """(cutn, 3) float (x0, y0, side) in pixels: tiles whose end positions touch the canvas edges.

        Along an axis of length L a side-s view has n = ⌈L/s⌉ slots spread evenly from 0 to
        L − s (one slot when it spans the axis), i.e. the fewest overlapping tiles that cover
        the axis. View k takes slot k mod n (the other axis ⌊k/n⌋ mod its n), starting at a
        random slot each step, and sides are random, so over a few steps every pixel is seen
        about equally often: on 448 × 256 each column is in 38–62 % of the views, where the
        original's uniform offsets give 0.5 % at the outer columns and 100 % in the middle.

        `within` (left, top, right, bottom) px tiles that part of the canvas instead of all of
        it (a pan's new band and its surroundings). `focus` puts the first `focus_share` of the
        views on that box (a repaint's region): each holds the box (or lies in it, when the box
        is wider than a view) with some surroundings, drawn after the tiles from the same
        generator, so without `within` and `focus` the views are what they always were.
        """
        s = self.settings
        left, top, right, bottom = within if within is not None else (0, 0, width, height)
        tiles = self._tiles(bottom - top, right - left, generator)
        tiles[:, 0] += left
        tiles[:, 1] += top
        if focus is not None:
            count = round(s.cutn * s.focus_share)
            tiles[:count] = self._focused(count, (left, top, right, bottom), focus, generator)
        return tiles

    def _tiles(self, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        s = self.settings
        count = s.cutn
        short = min(width, height)
        u = torch.rand(count, generator=generator, dtype=torch.float64)
        sides = torch.floor(short * (s.min_fraction + (s.max_fraction - s.min_fraction) * u)).clamp(8, short)
        k = torch.arange(count, dtype=torch.float64)
        start = torch.randint(0, 1 << 16, (2,), generator=generator).double()  # rotate the slot order per step
        xs, columns = self._slots(width, sides, k + start[0])
        ys, _ = self._slots(height, sides, torch.floor((k + start[0]) / columns) + start[1])
        return torch.stack([xs, ys, sides], dim=1)

    def _focused(self, count: int, area: Box, focus: Box, generator: torch.Generator) -> torch.Tensor:
        """(count, 3) views on `focus`: side 1–1.5 × its long side (at least 0.4 × the short side), inside `area`."""
        left, top, right, bottom = area
        f_left, f_top, f_right, f_bottom = focus
        short = min(right - left, bottom - top)
        u = torch.rand(count, 3, generator=generator, dtype=torch.float64)
        base = max(f_right - f_left, f_bottom - f_top, 0.4 * short)
        sides = torch.floor(base * (1 + 0.5 * u[:, 0])).clamp(8, short)

        def place(low: int, high: int, start: int, end: int, t: torch.Tensor) -> torch.Tensor:
            """Offsets on one axis: the view holds [low, high) if longer, else lies in it; then kept in [start, end)."""
            flush_end = high - sides  # where the view's end meets the box's end
            first, last = flush_end.clamp(max=low), flush_end.clamp(min=low)
            return torch.minimum((first + t * (last - first)).clamp(min=start), end - sides)

        xs = place(f_left, f_right, left, right, u[:, 1])
        ys = place(f_top, f_bottom, top, bottom, u[:, 2])
        return torch.stack([xs, ys, sides], dim=1)

    @staticmethod
    def _slots(length: int, sides: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Offsets of slot `index mod n` for views of `sides` along an axis of `length`; also n."""
        room = length - sides  # (cutn,)
        slots = torch.where(room > 0, torch.ceil(length / sides), torch.ones_like(sides))
        spacing = room / (slots - 1).clamp(min=1)
        return torch.remainder(index, slots) * spacing, slots

    def transforms(
        self, height: int, width: int, generator: torch.Generator, within: Box | None = None, focus: Box | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per view: a 3×3 map from output coords to canvas coords (both in [-1, 1]) and a 3×4 colour map."""
        s = self.settings
        count = s.cutn
        boxes = self.boxes(height, width, generator, within, focus)  # (n, 3)
        u = torch.rand(count, 8, generator=generator, dtype=torch.float64)
        flip = torch.where(u[:, 0] < s.flip_p, -1.0, 1.0)
        angle = (u[:, 1] * 2 - 1) * math.radians(s.max_degrees)
        keystone = (u[:, 2:4] * 2 - 1) * s.max_keystone  # (n, 2)
        # view coords → crop coords: perspective, rotation, flip (all about the view's centre)
        cos, sin = torch.cos(angle), torch.sin(angle)
        view = torch.zeros(count, 3, 3, dtype=torch.float64)
        view[:, 0, 0], view[:, 0, 1] = cos * flip, -sin
        view[:, 1, 0], view[:, 1, 1] = sin * flip, cos
        view[:, 2, 0], view[:, 2, 1], view[:, 2, 2] = keystone[:, 0], keystone[:, 1], 1.0
        # crop coords [-1, 1] → canvas coords [-1, 1] (align_corners=False convention)
        x0, y0, side = boxes.unbind(1)
        place = torch.zeros(count, 3, 3, dtype=torch.float64)
        place[:, 0, 0] = side / width
        place[:, 0, 2] = (2 * x0 + side) / width - 1
        place[:, 1, 1] = side / height
        place[:, 1, 2] = (2 * y0 + side) / height - 1
        place[:, 2, 2] = 1.0
        geometric = place @ view  # (n, 3, 3)
        colour = self._colour(u[:, 4:7])
        return geometric.float(), colour.float()

    def _colour(self, u: torch.Tensor) -> torch.Tensor:
        """(n, 3) uniforms → (n, 3, 4): [A | c] with x' = A·x + c·mean_grey(x); brightness·contrast·saturation."""
        s = self.settings
        n = u.shape[0]
        brightness = 1 + (u[:, 0] * 2 - 1) * s.brightness
        contrast = 1 + (u[:, 1] * 2 - 1) * s.contrast
        saturation = 1 + (u[:, 2] * 2 - 1) * s.saturation
        luma = torch.tensor(LUMA, dtype=u.dtype)
        eye = torch.eye(3, dtype=u.dtype).expand(n, 3, 3)
        grey = torch.ones(3, 1, dtype=u.dtype) * luma.view(1, 3)  # (3, 3): every channel ← grey
        saturate = saturation.view(n, 1, 1) * eye + (1 - saturation).view(n, 1, 1) * grey
        matrix = (brightness * contrast).view(n, 1, 1) * saturate
        offset = (brightness * (1 - contrast)).view(n, 1).expand(n, 3)
        return torch.cat([matrix, offset.unsqueeze(2)], dim=2)

    def __call__(
        self,
        pixels: torch.Tensor,
        generators: list[torch.Generator],
        noise_generators: list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B·cutn, 3, S, S): view k of image b at row b·cutn + k.

        `generators` (CPU) draw the view geometry and colours; `noise_generators` (on the
        pixels' device, default `generators`) draw the noise.
        """
        return self.sample(pixels, generators, noise_generators)[0]

    def sample(
        self,
        pixels: torch.Tensor,
        generators: list[torch.Generator],
        noise_generators: list[torch.Generator] | None = None,
        *,
        within: Box | None = None,
        focus: Box | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The views, as `__call__`, and each view's reach: (B·cutn, 4) float, x_min, x_max, y_min, y_max.

        The reach is the span of the view's sample points in canvas pixel coordinates (pixel
        centres at 0 … W − 1), so a view whose reach lies inside a box reads only that box's
        pixels (bilinear taps at ⌊x⌋ and ⌊x⌋ + 1): the caller can tell which views cannot
        carry any gradient to pixels outside it. `within` and `focus`: see `boxes`.
        """
        s = self.settings
        b, _, height, width = pixels.shape
        size = s.cut_size
        maps, colours = zip(*(self.transforms(height, width, g, within, focus) for g in generators), strict=True)
        geometric = torch.stack(maps).to(pixels.device)  # (B, n, 3, 3)
        colour = torch.stack(colours).to(device=pixels.device)  # (B, n, 3, 4)
        axis = (torch.arange(size, device=pixels.device, dtype=torch.float32) * 2 + 1) / size - 1
        gy, gx = torch.meshgrid(axis, axis, indexing='ij')
        base = torch.stack([gx, gy, torch.ones_like(gx)]).view(3, size * size)  # (3, S·S)
        warped = geometric @ base  # (B, n, 3, S·S)
        grid = (warped[:, :, :2] / warped[:, :, 2:]).transpose(2, 3).reshape(b, s.cutn * size, size, 2)
        # one sample for all views: the views are stacked along the grid's rows
        views = F.grid_sample(pixels, grid.to(pixels.dtype), mode='bilinear', padding_mode='reflection', align_corners=False)
        views = views.view(b, 3, s.cutn, size, size).transpose(1, 2)  # (B, n, 3, S, S)
        luma = torch.tensor(LUMA, device=pixels.device, dtype=views.dtype)
        grey = torch.einsum('c,bnchw->bn', luma, views) / (size * size)  # mean grey of each view
        matrix, offset = colour[..., :3].to(views.dtype), colour[..., 3].to(views.dtype)  # (B, n, 3, 3), (B, n, 3)
        views = torch.einsum('bnij,bnjhw->bnihw', matrix, views) + (offset * grey.unsqueeze(-1))[..., None, None]
        noise = torch.stack([self._noise(g, pixels) for g in noise_generators or generators])  # (B, n, 3, S, S)
        with torch.no_grad():
            x = ((grid[..., 0] + 1) * width - 1) / 2  # (B, n·S, S), align_corners=False pixel coordinates
            y = ((grid[..., 1] + 1) * height - 1) / 2
            spans = [c.reshape(b * s.cutn, size * size) for c in (x, y)]
            reach = torch.stack([spans[0].amin(1), spans[0].amax(1), spans[1].amin(1), spans[1].amax(1)], dim=1)
        return (views + noise).reshape(b * s.cutn, 3, size, size), reach.float()

    def _noise(self, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
        s = self.settings
        size = s.cut_size
        device = generator.device
        factors = torch.rand(s.cutn, 1, 1, 1, generator=generator, device=device) * s.noise_max
        noise = torch.randn(s.cutn, 3, size, size, generator=generator, device=device)
        return (factors * noise).to(device=like.device, dtype=like.dtype)


def coverage(boxes: list[tuple[float, float, float]] | torch.Tensor, width: int) -> torch.Tensor:
    """(W,) fraction of boxes (x0, y0, side) that contain each column: how often CLIP sees it."""
    seen = torch.zeros(width, dtype=torch.float64)
    columns = torch.arange(width, dtype=torch.float64) + 0.5
    count = 0
    for x0, _, side in (b.tolist() if isinstance(b, torch.Tensor) else b for b in boxes):
        seen += ((columns >= x0) & (columns < x0 + side)).double()
        count += 1
    return seen / max(count, 1)
