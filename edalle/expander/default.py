"""The default expander: E-DALL-E's idea, rebuilt around its weaknesses.

What it does differently from `classic`, and why:
- **Exact centre.** For a generated candidate the centre latents are its own token grid,
  embedded by the generator's own VQGAN: no lossy re-encode (the original's re-encoded
  centre is only 20.9 dB PSNR from the source). Only the new sides are parameters, so
  gradients, Adam state and the nearest-code search cover the latents that can change.
- **The kept picture is the pick.** Every decode is composited (`composite`): the source's
  pixels go back in the centre, and the sides get the colour difference measured along the
  seam, fading out over `feather_px`, so the join is continuous while the centre stays
  bit-identical to the source. CLIP sees this composite, i.e. exactly what the user gets,
  and a small pixel term (`seam_weight`) asks the decoder to agree with the source near the
  seam, which keeps that correction small.
- **Even CLIP coverage, one resample.** `EvenCutouts` tiles the canvas so its outer columns
  are seen in ~40 % of the views instead of 0.5 %, and builds all views of all images with
  one `grid_sample` (crop, resize, flip, rotation, perspective folded into one map) and one
  colour matrix, instead of a Python loop and five kornia passes.
- **Better start, faster schedule.** The sides start from a blurred mirror of the source
  (colours and coarse layout, no streaks) and Adam runs at a higher peak lr with a cosine
  decay, so codes move early and settle late.
- **Decode what is kept out.** Each side is decoded with only `context_tokens` (4) source
  columns beside it (`decode_sides`), both sides as one batch: 20 token columns instead of
  28 on 16:9, so the decoder's forward and backward, the largest cost per step, shrink by
  ~30 %; the centre is the source's own pixels anyway.
- **Engineering.** Nothing is written or decoded inside the loop besides the one decode the
  loss needs (previews reuse it); several images of one geometry run as one batch (every
  per-image quantity — GroupNorm, attention, loss, Adam — is independent across the batch,
  and each image draws its randomness from its own seed); bf16 autocast for the decoder
  and CLIP on CUDA and on CPUs with native bf16; views that read only the kept picture
  (about a fifth of them on 16:9) go through CLIP forward only, since they carry no
  gradient to the sides; on one machine a given seed gives the same output.

Why 100 steps × 32 views are enough where the original spends 200 × 64:
- Guidance per step where it matters. A pixel of the new 96-px bands on 16:9 is inside
  ~40 % of the even views, ≈ 13 of 32 per step; the original puts it in 23 % of 64, ≈ 15,
  and its outermost columns in 0.5–8 %, i.e. 0.3–5 views per step against ≈ 12 here. About
  80 % of the original's view area is spent on the frozen centre.
- Distance travelled. Adam moves each latent by about lr per step; 100 steps of a cosine
  from 0.3 to 0.03 add up to Σ lr ≈ 16.5, close to the original's 200 × 0.1 = 20, and the
  large early steps are what the straight-through quantiser needs to switch codes at all.
- A shorter way to go. The blurred-mirror start already has the right colours and layout;
  the original's first tens of steps are spent undoing horizontal streaks.
- Nothing to recover. The centre is exact from step 0, so no steps go into holding it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from edalle.expander.classic import MethodOutput, Observer, Progress, codebook_box
from edalle.expander.cutouts import EvenCutouts, EvenCutoutSettings
from edalle.expander.edge_fill import soft_mirror_fill
from edalle.expander.errors import ExpandCancelled
from edalle.expander.geometry import Geometry
from edalle.expander.images import to_images, to_pixels
from edalle.expander.losses import clamp_with_grad, spherical_distance_sq
from edalle.models.cpu import native_bf16_cpu

SEAM_SAMPLE_PX = 4  # source columns whose colour difference is carried across the seam
SEAM_SMOOTH_PX = 9  # that difference is averaged along the seam over this many pixels


@dataclass(frozen=True)
class DefaultSettings:
    steps: int = 100
    cutn: int = 32
    lr: float = 0.3  # peak; cosine decay to lr_final
    lr_final: float = 0.03
    text_weight: float = 1.0
    image_weight: float = 0.5  # the source as an image prompt; less than the original's 1 (see module doc)
    image_views: int = 16  # views of the source that make the image prompt
    seam_weight: float = 1.0  # MSE between the decode and the source in the seam band
    seam_px: int = 32
    feather_px: int = 32
    min_fraction: float = 0.6
    max_fraction: float = 1.0
    context_tokens: int = 4  # source tokens decoded with each side (0: decode the whole canvas)
    preview_every: int = 10  # progress gets a preview image every this many steps (0: never)
    amp: bool = True  # bf16 autocast on CUDA and on CPUs with native bf16 (`bf16_autocast`); False: fp32
    fresh_views: bool = True  # new random views every step; False repeats step 0's (a fixed objective, for tests)

    def describe(self) -> dict[str, object]:
        return {'method': 'default', **asdict(self)}

    def cutout_settings(self, cutn: int | None = None) -> EvenCutoutSettings:
        return EvenCutoutSettings(cutn=cutn or self.cutn, min_fraction=self.min_fraction, max_fraction=self.max_fraction)


@dataclass(frozen=True)
class DefaultItem:
    """One image to expand: its source (size of the geometry's source box), tokens if generated, prompt, seed."""

    source: Image.Image
    tokens: np.ndarray | None  # (rows, columns) codes of `source` under this VQGAN, or None
    prompt: str
    seed: int


def run_default(
    vqgan: torch.nn.Module,
    clip: object,
    items: list[DefaultItem],
    geometry: Geometry,
    settings: DefaultSettings | None = None,
    *,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    observer: Observer | None = None,
) -> MethodOutput:
    """Expand every item to `geometry` together, as one batch. See the module docstring."""
    settings = settings or DefaultSettings()
    device = torch.device(clip.device)  # type: ignore[attr-defined]
    amp = bf16_autocast(device, settings.amp)
    batch = len(items)
    sources = torch.cat([to_pixels(item.source, device) for item in items])  # (B, 3, h, w)
    left, top, right, bottom = geometry.source_box
    if sources.shape[-2:] != (bottom - top, right - left):
        raise ValueError(f'sources are {tuple(sources.shape[-2:])}, the geometry expects {(bottom - top, right - left)}')
    geometry_generators, noise_generators = _generators(items, device)

    with torch.no_grad():
        centre = _centre_latents(vqgan, items, sources)  # (B, D, rows0, columns0)
        canvas = soft_mirror_fill(sources, geometry)  # (B, 3, H, W)
        start, _ = vqgan.quantize(vqgan.encode(canvas))  # (B, D, rows, columns)
    sides = [side.clone().requires_grad_(True) for side in _split(start, geometry)]
    optimizer = torch.optim.Adam(sides, lr=settings.lr)
    z_min, z_max = codebook_box(vqgan.codebook.detach())

    views = EvenCutouts(settings.cutout_settings())
    text_weights = torch.tensor(
        [settings.text_weight if item.prompt.strip() else 0.0 for item in items], device=device
    )  # (B,)
    texts = clip.encode_text([item.prompt or ' ' for item in items])  # type: ignore[attr-defined]  # (B, D)
    with torch.no_grad(), amp:
        prompt_views = EvenCutouts(settings.cutout_settings(settings.image_views))
        image_targets = clip.encode_images(prompt_views(sources, geometry_generators, noise_generators))  # type: ignore[attr-defined]
    image_targets = image_targets.float().view(batch, settings.image_views, -1)  # (B, m, D)

    def assemble(side_latents: list[torch.Tensor]) -> torch.Tensor:
        quantised = [vqgan.quantize(side)[0] for side in side_latents]  # straight-through
        return torch.cat([quantised[0], centre, quantised[1]], dim=geometry.axis)

    losses: list[list[float]] = [[] for _ in items]
    for step in range(settings.steps):
        if should_cancel is not None and should_cancel():
            raise ExpandCancelled(step, settings.steps)
        _set_lr(optimizer, _cosine(step, settings))
        if not settings.fresh_views:
            geometry_generators, noise_generators = _generators(items, device, offset=2)
        optimizer.zero_grad(set_to_none=True)
        decoded = decode_sides(vqgan, assemble(sides), sources, geometry, settings.context_tokens, amp)
        decoded = clamp_with_grad(decoded)  # (B, 3, H, W)
        image = composite(decoded, sources, geometry, settings.feather_px)
        pixels, reach = views.sample(image, geometry_generators, noise_generators)
        embeddings = encode_views(clip, pixels, ~inside_box(reach, geometry, image.shape[-2:]), amp)
        embeddings = embeddings.float().view(batch, settings.cutn, -1)  # (B, n, D)
        per_item = _losses(embeddings, texts, text_weights, image_targets, settings)
        per_item = per_item + settings.seam_weight * seam_error(decoded, sources, geometry, settings.seam_px)
        per_item.sum().backward()  # a sum, so each image's gradient is what it would be alone
        optimizer.step()
        with torch.no_grad():
            for side in sides:
                side.copy_(torch.maximum(torch.minimum(side, z_max), z_min))
        for i, value in enumerate(per_item.detach().cpu().tolist()):
            losses[i].append(value)
        if observer is not None:
            with torch.no_grad():
                observer(step, torch.cat([sides[0], centre, sides[1]], dim=geometry.axis))
        if progress is not None:
            show = settings.preview_every > 0 and (step % settings.preview_every == 0 or step == settings.steps - 1)
            progress('expand', step + 1, settings.steps, to_images(image[:1])[0] if show else None)

    with torch.no_grad():
        latents = assemble([side.detach() for side in sides])
        decoded = decode_sides(vqgan, latents, sources, geometry, settings.context_tokens, amp)
    final = composite(decoded.clamp(0, 1), sources, geometry, settings.feather_px)
    return MethodOutput(to_images(final), losses, settings.steps)


def bf16_autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bf16 autocast for the decoder and CLIP: on CUDA, and on CPUs with native bf16 (2× the decoder's speed there).

    The nearest-code search and the losses stay outside it (fp32): a bf16 distance would
    pick wrong codes. Elsewhere (other CPUs, other devices) it is a disabled context.
    """
    if device.type == 'cuda':
        return torch.autocast('cuda', dtype=torch.bfloat16, enabled=enabled)
    return torch.autocast('cpu', dtype=torch.bfloat16, enabled=enabled and device.type == 'cpu' and native_bf16_cpu())


def inside_box(reach: torch.Tensor, geometry: Geometry, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """(N, 4) view reaches (`EvenCutouts.sample`) → (N,) bool: the view reads only the kept picture's pixels.

    Those pixels are the source itself in the composite, constant, so such a view's CLIP
    embedding has no gradient with respect to the sides. Along an axis the source spans
    entirely, any position (reflection included) is inside.
    """
    left, top, right, bottom = geometry.source_box
    height, width = size
    inside = torch.ones(reach.shape[0], dtype=torch.bool, device=reach.device)
    for (low, high), (lo, hi), length in (((0, 1), (left, right), width), ((2, 3), (top, bottom), height)):
        if lo > 0 or hi < length:  # both bilinear taps, at ⌊x⌋ and ⌊x⌋ + 1, must be in [lo, hi)
            inside &= (reach[:, low] >= lo) & (reach[:, high] <= hi - 2)
    return inside


def encode_views(clip: object, views: torch.Tensor, needs_grad: torch.Tensor, amp: torch.autocast) -> torch.Tensor:
    """CLIP embeddings (N, D) of all views, in order; views with `needs_grad` False go forward only.

    A view that reads only the kept picture adds to the loss but not to the gradient, so its
    backward pass through CLIP (about half of CLIP's cost) would be spent on zeros. Each
    view's embedding is independent of the others, so splitting the batch changes nothing
    but float rounding.
    """
    encode = clip.encode_images  # type: ignore[attr-defined]
    if bool(needs_grad.all()) or not torch.is_grad_enabled():
        with amp:
            return encode(views)
    moving = needs_grad.nonzero().squeeze(1)
    still = (~needs_grad).nonzero().squeeze(1)
    parts = []
    with amp:
        if moving.numel():
            parts.append(encode(views[moving]))
        with torch.no_grad():
            parts.append(encode(views[still].detach()))
    order = torch.cat([moving, still])
    return torch.cat([part.float() for part in parts])[torch.argsort(order)]


def _generators(
    items: list[DefaultItem], device: torch.device, offset: int = 0
) -> tuple[list[torch.Generator], list[torch.Generator]]:
    """Per image: a CPU generator for view geometry and one on `device` for noise, from its own seed."""
    cpu = [torch.Generator().manual_seed(item.seed + offset) for item in items]
    on_device = [torch.Generator(device=device).manual_seed(item.seed + offset + 1) for item in items]
    return cpu, on_device


def decode_sides(
    vqgan: torch.nn.Module,
    latents: torch.Tensor,
    sources: torch.Tensor,
    geometry: Geometry,
    context_tokens: int,
    amp: torch.autocast,
) -> torch.Tensor:
    """(B, D, rows, columns) → (B, 3, H, W) float: each new side decoded with `context_tokens` of the source beside it.

    The middle of the result is the source itself: it is replaced by the source in the
    output anyway, so only the sides and the source's edge bands (which the seam correction
    and the seam loss compare with the source) are decoded. The two windows have the same
    size, so they go through the decoder as one batch of 2B; on 16:9 with 4 context tokens
    that is 20 token columns instead of 28. The decoder's convolutions reach a few tokens,
    so the sides see the same neighbourhood; only its global attention and GroupNorm see a
    window rather than the canvas, which is also closer to the 16×16 grids it was trained on.
    0 decodes the whole canvas.
    """
    axis = geometry.axis
    size = latents.shape[axis]
    kept = geometry.source_tokens[axis - 2]
    context = min(context_tokens, kept // 2)
    if context <= 0:
        with amp:
            return vqgan.decode_latents(latents).float()
    span = geometry.added_per_side + context
    windows = torch.cat([latents.narrow(axis, 0, span), latents.narrow(axis, size - span, span)])  # (2B, D, …)
    with amp:
        pixels = vqgan.decode_latents(windows).float()
    first, last = pixels.chunk(2)
    middle_px = (kept - 2 * context) * 16
    middle = sources.narrow(axis, context * 16, middle_px)
    return torch.cat([first, middle, last], dim=axis)


def _centre_latents(vqgan: torch.nn.Module, items: list[DefaultItem], sources: torch.Tensor) -> torch.Tensor:
    """Exact codebook rows of each item's tokens; items without tokens are encoded (one batch) and quantised."""
    out: list[torch.Tensor | None] = [None] * len(items)
    for i, item in enumerate(items):
        if item.tokens is not None:
            codes = torch.as_tensor(np.asarray(item.tokens, dtype=np.int64), device=sources.device)
            out[i] = vqgan.embed_tokens(codes[None])[0]
    missing = [i for i, z in enumerate(out) if z is None]
    if missing:
        encoded, _ = vqgan.quantize(vqgan.encode(sources[missing]))
        for i, z in zip(missing, encoded, strict=True):
            out[i] = z
    return torch.stack([z for z in out if z is not None])


def _split(latents: torch.Tensor, geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, D, rows, columns) → the two new side bands (left/right or top/bottom), as copies."""
    added = geometry.added_per_side
    size = latents.shape[geometry.axis]
    before = latents.narrow(geometry.axis, 0, added)
    after = latents.narrow(geometry.axis, size - added, added)
    return before.contiguous(), after.contiguous()


def _cosine(step: int, settings: DefaultSettings) -> float:
    if settings.steps <= 1:
        return settings.lr
    t = step / (settings.steps - 1)
    return settings.lr_final + (settings.lr - settings.lr_final) * 0.5 * (1 + math.cos(math.pi * t))


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group['lr'] = lr


def _losses(
    embeddings: torch.Tensor,
    texts: torch.Tensor,
    text_weights: torch.Tensor,
    image_targets: torch.Tensor,
    settings: DefaultSettings,
) -> torch.Tensor:
    """(B,) CLIP loss per image: weighted mean θ²/2 to its text and to its image-prompt views."""
    per_text = torch.stack([spherical_distance_sq(e, t[None]).mean() for e, t in zip(embeddings, texts, strict=True)])
    per_image = torch.stack([spherical_distance_sq(e, m).mean() for e, m in zip(embeddings, image_targets, strict=True)])
    return text_weights * per_text + settings.image_weight * per_image


def composite(decoded: torch.Tensor, sources: torch.Tensor, geometry: Geometry, feather_px: int) -> torch.Tensor:
    """Decoded canvas (B, 3, H, W) + sources (B, 3, h, w) → the output canvas, source pixels exact in its box.

    Along each seam the colour difference source − decode (averaged over the source's
    outer `SEAM_SAMPLE_PX` and smoothed along the seam) is added to the decoded side,
    fading from full at the seam to zero `feather_px` away, so the new side meets the kept
    picture without a step and the kept picture is untouched. Differentiable in `decoded`.
    """
    if geometry.orientation == 'tall':
        return composite(decoded.transpose(2, 3), sources.transpose(2, 3), geometry.transposed(), feather_px).transpose(2, 3)
    left, _, right, _ = geometry.source_box
    inner = decoded[..., left:right]  # (B, 3, h, w): the decoder's own view of the kept picture
    left_fix = _seam_offset(sources[..., :SEAM_SAMPLE_PX] - inner[..., :SEAM_SAMPLE_PX])  # (B, 3, h, 1)
    right_fix = _seam_offset(sources[..., -SEAM_SAMPLE_PX:] - inner[..., -SEAM_SAMPLE_PX:])
    ramp = _feather(left, feather_px, decoded)  # (left,): 0 far away … ~1 next to the seam
    left_side = decoded[..., :left] + left_fix * ramp
    right_side = decoded[..., right:] + right_fix * ramp.flip(0)
    return torch.cat([left_side.clamp(0, 1), sources, right_side.clamp(0, 1)], dim=3)


def _seam_offset(difference: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, k) → (B, 3, h, 1): mean over the k columns, then a box blur along the seam."""
    column = difference.mean(dim=3)  # (B, 3, h)
    pad = SEAM_SMOOTH_PX // 2
    smooth = F.avg_pool1d(F.pad(column, (pad, pad), mode='replicate'), SEAM_SMOOTH_PX, stride=1)
    return smooth.unsqueeze(3)


def _feather(width: int, feather_px: int, like: torch.Tensor) -> torch.Tensor:
    """(width,) smoothstep weights: 1 at the last column (next to the seam), 0 from `feather_px` away."""
    distance = torch.arange(width, 0, -1, device=like.device, dtype=like.dtype) - 0.5  # pixel centres to the seam
    t = (1 - distance / max(feather_px, 1)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def seam_error(decoded: torch.Tensor, sources: torch.Tensor, geometry: Geometry, band_px: int) -> torch.Tensor:
    """(B,) mean squared difference between the decode and the source in the `band_px` next to each seam."""
    if geometry.orientation == 'tall':
        return seam_error(decoded.transpose(2, 3), sources.transpose(2, 3), geometry.transposed(), band_px)
    left, _, right, _ = geometry.source_box
    inner = decoded[..., left:right]
    bands = torch.cat([inner[..., :band_px] - sources[..., :band_px], inner[..., -band_px:] - sources[..., -band_px:]], 3)
    return bands.pow(2).mean(dim=(1, 2, 3))
