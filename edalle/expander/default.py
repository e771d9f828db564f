"""The default method: E-DALL-E's idea, rebuilt around its weaknesses, on any canvas.

`run_canvas` optimises the free cells of a `Canvas` (edalle/expander/canvas.py): new cells around
a source (a ratio, zoom, pan, square: mode 'extend'), a region inside it ('repaint'), or all of
them ('dream': VQGAN+CLIP from a prompt alone). One loop serves all three; they differ in the
start, in what CLIP sees (the composite, the feathered region, the decode itself) and in the
seam term. `run_default` is the ratio expansion it has always been, bit for bit.

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
  columns beside it (`Canvas.decode_windows`, `decode.decode_windows`), both sides as one
  batch: 20 token columns instead of 28 on 16:9, so the decoder's forward and backward, the
  largest cost per step, shrink by ~30 %; the centre is the source's own pixels anyway. A pan
  decodes one window (its band and the context), a zoom the whole canvas (see there).
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
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image

from edalle.expander.canvas import Canvas, canvas_from_geometry
from edalle.expander.classic import MethodOutput, Observer, Progress, codebook_box
from edalle.expander.cutouts import EvenCutouts, EvenCutoutSettings
from edalle.expander.decode import decode_windows
from edalle.expander.edge_fill import region_fill, soft_mirror_fill
from edalle.expander.errors import ExpandCancelled
from edalle.expander.frames import FRAME_PX, FrameRecorder
from edalle.expander.geometry import TOKEN_PX, Geometry
from edalle.expander.images import to_images, to_pixels
from edalle.expander.losses import clamp_with_grad, negative_hinge, spherical_distance_sq
from edalle.expander.seams import (
    blend_region,
    composite,
    moving_pixels,
    region_alpha,
    region_seam_error,
    seam_error,
)
from edalle.models.cpu import native_bf16_cpu


@dataclass(frozen=True)
class DefaultSettings:
    steps: int = 100
    cutn: int = 32
    lr: float = 0.3  # peak; cosine decay to lr_final
    lr_final: float = 0.03
    text_weight: float = 1.0
    image_weight: float = 0.5  # the source as an image prompt; less than the original's 1 (see module doc). Extend only.
    image_views: int = 16  # views of the source that make the image prompt
    seam_weight: float = 1.0  # MSE between the decode and the source in the seam band. Not in a dream.
    seam_px: int = 32
    feather_px: int = 32  # extend: the seam's colour correction fades out over this many pixels
    min_fraction: float = 0.6
    max_fraction: float = 1.0
    context_tokens: int = 4  # source tokens decoded with each side (0: decode the whole canvas)
    preview_every: int = 10  # progress gets a preview image every this many steps (0: never)
    amp: bool = True  # bf16 autocast on CUDA and on CPUs with native bf16 (`bf16_autocast`); False: fp32
    fresh_views: bool = True  # new random views every step; False repeats step 0's (a fixed objective, for tests)
    negative_weight: float = 0.5  # the negative prompt's hinge (`losses.negative_hinge`), when one is given
    negative_margin: float = 0.1  # in θ²/2: how much nearer the prompt than the negative a view must be
    focus_share: float = 0.5  # repaint: share of the views placed on the region's bounding box

    def describe(self) -> dict[str, object]:
        return {'method': 'default', **asdict(self)}

    def cutout_settings(self, cutn: int | None = None) -> EvenCutoutSettings:
        return EvenCutoutSettings(
            cutn=cutn or self.cutn,
            min_fraction=self.min_fraction,
            max_fraction=self.max_fraction,
            focus_share=self.focus_share,
        )


@dataclass(frozen=True)
class CanvasItem:
    """One picture to optimise: its source (`canvas.source_px`; None for a dream from nothing), tokens if generated,
    prompt, seed, and optionally a negative prompt and how to start (`canvas.INITS`; 'auto': the mode's usual)."""

    source: Image.Image | None
    tokens: np.ndarray | None  # (rows, columns) codes of `source` under this VQGAN, or None
    prompt: str
    seed: int
    negative_prompt: str = ''
    init: str = 'auto'


DefaultItem = CanvasItem  # the name ratio expansions have always used


@dataclass
class CanvasOutput(MethodOutput):
    """A method's output plus the time-lapse frames and the final token grid of each image."""

    frames: list[list] = field(default_factory=list)  # per image: frames.Frame, oldest first
    tokens: list[np.ndarray] = field(default_factory=list)  # per image: (rows, columns) codes of the final canvas


def run_default(
    vqgan: torch.nn.Module,
    clip: object,
    items: list[CanvasItem],
    geometry: Geometry,
    settings: DefaultSettings | None = None,
    *,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    observer: Observer | None = None,
) -> CanvasOutput:
    """Expand every item to a ratio `geometry` together, as one batch: `run_canvas` on its canvas."""
    canvas = canvas_from_geometry(geometry)
    return run_canvas(
        vqgan, clip, items, canvas, settings, progress=progress, should_cancel=should_cancel, observer=observer
    )


def run_canvas(
    vqgan: torch.nn.Module,
    clip: object,
    items: list[CanvasItem],
    canvas: Canvas,
    settings: DefaultSettings | None = None,
    *,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    observer: Observer | None = None,
    record_every: int = 0,
    frame_px: int = FRAME_PX,
) -> CanvasOutput:
    """Optimise the free cells of `canvas` for every item together, as one batch. See the module docstring.

    `observer(step, z)` gets the canvas latents (B, D, rows, columns) after every update (free
    cells unquantised). `record_every` k > 0 keeps a time-lapse frame every k steps (`frames`).
    Progress is reported as (canvas.stage, done, total, preview).
    """
    settings = settings or DefaultSettings()
    device = torch.device(clip.device)  # type: ignore[attr-defined]
    amp = bf16_autocast(device, settings.amp)
    mode = canvas.mode
    batch = len(items)
    inits = [canvas.resolve_init(item.init) for item in items]
    sources = _sources(items, canvas, device)  # (B, 3, h, w) or None
    geometry_generators, noise_generators = _generators(items, device)

    with torch.no_grad():
        fixed, fixed_codes = _fixed_latents(vqgan, items, canvas, sources)  # (B, D, rows, columns), (B, rows, columns)
        start = _start_latents(vqgan, items, inits, canvas, sources, fixed)  # (B, D, rows, columns)
    bands = [  # one latent tensor per free rectangle: the two side bands of a ratio, four around a zoom, …
        start[..., top:bottom, left:right].contiguous().clone().requires_grad_(True)
        for top, left, bottom, right in canvas.free
    ]
    optimizer = torch.optim.Adam(bands, lr=settings.lr)
    z_min, z_max = codebook_box(vqgan.codebook.detach())
    windows = canvas.decode_windows(settings.context_tokens)
    base = _base_pixels(sources, canvas, batch, device)  # (B, 3, H, W): what is not decoded
    alpha = region_alpha(canvas, device) if mode == 'repaint' else None
    moving = moving_pixels(canvas, device)
    within, focus = canvas.view_box(), canvas.focus_box()

    views = EvenCutouts(settings.cutout_settings())
    text_weights = torch.tensor(
        [settings.text_weight if item.prompt.strip() else 0.0 for item in items], device=device
    )  # (B,)
    texts = clip.encode_text([item.prompt or ' ' for item in items])  # type: ignore[attr-defined]  # (B, D)
    image_targets = None
    if mode == 'extend':  # in a repaint it would pull the region back to what was there; a dream has no source
        with torch.no_grad(), amp:
            prompt_views = EvenCutouts(settings.cutout_settings(settings.image_views))
            image_targets = clip.encode_images(prompt_views(sources, geometry_generators, noise_generators))  # type: ignore[attr-defined]
        image_targets = image_targets.float().view(batch, settings.image_views, -1)  # (B, m, D)
    negatives = None  # (B, D) embeddings of the negative prompts, when any item has one
    negative_weights = torch.tensor(
        [settings.negative_weight if item.negative_prompt.strip() else 0.0 for item in items], device=device
    )  # (B,)
    if any(item.negative_prompt.strip() for item in items):
        negatives = clip.encode_text([item.negative_prompt or ' ' for item in items]).float()  # type: ignore[attr-defined]

    def assemble(band_latents: list[torch.Tensor], quantise: bool = True) -> torch.Tensor:
        """The canvas latents: `fixed` with every band written in (straight-through quantised when asked)."""
        latents = fixed.clone()
        for (top, left, bottom, right), band in zip(canvas.free, band_latents, strict=True):
            latents[..., top:bottom, left:right] = vqgan.quantize(band)[0] if quantise else band
        return latents

    def picture(decoded: torch.Tensor) -> torch.Tensor:
        """What CLIP sees and the user gets: the composite, the feathered region, or the decode itself."""
        if mode == 'extend':
            return composite(decoded, sources, canvas, settings.feather_px)
        if mode == 'repaint':
            return blend_region(decoded, sources, alpha)
        return decoded

    frames = FrameRecorder(batch, record_every, frame_px)
    losses: list[list[float]] = [[] for _ in items]
    for step in range(settings.steps):
        if should_cancel is not None and should_cancel():
            raise ExpandCancelled(step, settings.steps)
        _set_lr(optimizer, _cosine(step, settings))
        if not settings.fresh_views:
            geometry_generators, noise_generators = _generators(items, device, offset=2)
        optimizer.zero_grad(set_to_none=True)
        decoded = decode_windows(vqgan, assemble(bands), base, windows, amp)
        decoded = clamp_with_grad(decoded)  # (B, 3, H, W)
        image = picture(decoded)
        if frames.wants(step):
            frames.record(step, image)
        pixels, reach = views.sample(image, geometry_generators, noise_generators, within=within, focus=focus)
        embeddings = encode_views(clip, pixels, views_needing_grad(reach, moving), amp)
        embeddings = embeddings.float().view(batch, settings.cutn, -1)  # (B, n, D)
        per_item = _losses(embeddings, texts, text_weights, image_targets, settings)
        if negatives is not None:
            hinge = [
                negative_hinge(e, t, n, settings.negative_margin)
                for e, t, n in zip(embeddings, texts, negatives, strict=True)
            ]
            per_item = per_item + negative_weights * torch.stack(hinge)
        if mode == 'extend':
            per_item = per_item + settings.seam_weight * seam_error(decoded, sources, canvas, settings.seam_px)
        elif mode == 'repaint':
            per_item = per_item + settings.seam_weight * region_seam_error(decoded, sources, canvas, settings.seam_px)
        per_item.sum().backward()  # a sum, so each image's gradient is what it would be alone
        optimizer.step()
        with torch.no_grad():
            for band in bands:
                band.copy_(torch.maximum(torch.minimum(band, z_max), z_min))
        for i, value in enumerate(per_item.detach().cpu().tolist()):
            losses[i].append(value)
        if observer is not None:
            with torch.no_grad():
                observer(step, assemble(bands, quantise=False))
        if progress is not None:
            show = settings.preview_every > 0 and (step % settings.preview_every == 0 or step == settings.steps - 1)
            progress(canvas.stage, step + 1, settings.steps, to_images(image[:1])[0] if show else None)

    with torch.no_grad():
        final_bands = [band.detach() for band in bands]
        latents = assemble(final_bands)
        decoded = decode_windows(vqgan, latents, base, windows, amp)
        final = picture(decoded.clamp(0, 1))
        codes = fixed_codes.clone()
        for (top, left, bottom, right), band in zip(canvas.free, final_bands, strict=True):
            codes[:, top:bottom, left:right] = vqgan.quantize(band)[1]
    images = to_images(final)
    delivered = torch.cat([to_pixels(image, device) for image in images]) if frames.every > 0 else final
    return CanvasOutput(
        images,
        losses,
        settings.steps,
        frames=frames.finish(delivered, settings.steps),
        tokens=list(codes.cpu().numpy()),
    )


def bf16_autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bf16 autocast for the decoder and CLIP: on CUDA, and on CPUs with native bf16 (2× the decoder's speed there).

    The nearest-code search and the losses stay outside it (fp32): a bf16 distance would
    pick wrong codes. Elsewhere (other CPUs, other devices) it is a disabled context.
    """
    if device.type == 'cuda':
        return torch.autocast('cuda', dtype=torch.bfloat16, enabled=enabled)
    return torch.autocast('cpu', dtype=torch.bfloat16, enabled=enabled and device.type == 'cpu' and native_bf16_cpu())


def views_needing_grad(reach: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """(N, 4) view reaches (`EvenCutouts.sample`), (H, W) bool moving pixels → (N,) bool: the view reads a moving pixel.

    A view reads the pixels from ⌊x_min⌋ to ⌈x_max⌉ + 1 (its bilinear taps; the same for y).
    One that reads none of the moving pixels (those that depend on the free latents; the rest
    are the source itself, constant) carries no gradient, so CLIP's backward for it would be
    spent on zeros. A view that reaches past the canvas edge reads reflected pixels: it is
    taken to read that whole axis. Counts come from a summed-area table of `moving`.
    """
    height, width = moving.shape
    table = torch.zeros(height + 1, width + 1, dtype=torch.int64, device=moving.device)
    table[1:, 1:] = moving.long().cumsum(0).cumsum(1)
    reach = reach.to(moving.device)

    def span(low: torch.Tensor, high: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        outside = (low < 0) | (high > length - 1)
        first = torch.where(outside, torch.zeros_like(low), torch.floor(low)).long()
        last = torch.where(outside, torch.full_like(high, length - 1), torch.ceil(high) + 1).long().clamp(max=length - 1)
        return first, last + 1  # [first, end)

    x0, x1 = span(reach[:, 0], reach[:, 1], width)
    y0, y1 = span(reach[:, 2], reach[:, 3], height)
    count = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    return count > 0


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
    items: list[CanvasItem], device: torch.device, offset: int = 0
) -> tuple[list[torch.Generator], list[torch.Generator]]:
    """Per image: a CPU generator for view geometry and one on `device` for noise, from its own seed."""
    cpu = [torch.Generator().manual_seed(item.seed + offset) for item in items]
    on_device = [torch.Generator(device=device).manual_seed(item.seed + offset + 1) for item in items]
    return cpu, on_device


def _sources(items: list[CanvasItem], canvas: Canvas, device: torch.device) -> torch.Tensor | None:
    """(B, 3, h, w) source pixels, checked against the canvas; None for dreams from nothing."""
    given = [item.source is not None for item in items]
    if canvas.source is None:
        if any(given):
            raise ValueError('this canvas has no source; a dream from a picture is canvas_for_refine')
        return None
    if not all(given):
        raise ValueError(f'every item needs a source picture of {canvas.source_px} for this {canvas.kind}')
    sources = torch.cat([to_pixels(item.source, device) for item in items])  # type: ignore[arg-type]
    width, height = canvas.source_px
    if tuple(sources.shape[-2:]) != (height, width):
        raise ValueError(f'sources are {tuple(sources.shape[-2:])}, the canvas expects {(height, width)}')
    return sources


def _fixed_latents(
    vqgan: torch.nn.Module, items: list[CanvasItem], canvas: Canvas, sources: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The latents that never change, on the canvas (B, D, rows, columns), and their codes (B, rows, columns).

    The source's exact codebook rows sit in its box (zeros and code 0 elsewhere, where the
    free bands are written in); a dream from nothing has none.
    """
    batch = len(items)
    rows, columns = canvas.tokens
    dim = vqgan.codebook.shape[1]
    device = vqgan.codebook.device
    latents = torch.zeros(batch, dim, rows, columns, device=device)
    codes = torch.zeros(batch, rows, columns, dtype=torch.long, device=device)
    if sources is not None and canvas.source is not None:
        top, left, bottom, right = canvas.source
        centre, centre_codes = _centre_latents(vqgan, items, sources)
        latents[..., top:bottom, left:right] = centre
        codes[:, top:bottom, left:right] = centre_codes
    return latents, codes


def _centre_latents(
    vqgan: torch.nn.Module, items: list[CanvasItem], sources: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact codebook rows (B, D, h, w) and codes (B, h, w) of each item's tokens; items without tokens are
    encoded (one batch) and quantised."""
    out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(items)
    for i, item in enumerate(items):
        if item.tokens is not None:
            codes = torch.as_tensor(np.asarray(item.tokens, dtype=np.int64), device=sources.device)
            out[i] = (vqgan.embed_tokens(codes[None])[0], codes)
    missing = [i for i, z in enumerate(out) if z is None]
    if missing:
        encoded, indices = vqgan.quantize(vqgan.encode(sources[missing]))
        for i, z, c in zip(missing, encoded, indices, strict=True):
            out[i] = (z, c)
    pairs = [z for z in out if z is not None]
    return torch.stack([z for z, _ in pairs]), torch.stack([c for _, c in pairs])


def _start_latents(
    vqgan: torch.nn.Module,
    items: list[CanvasItem],
    inits: list[str],
    canvas: Canvas,
    sources: torch.Tensor | None,
    fixed: torch.Tensor,
) -> torch.Tensor:
    """(B, D, rows, columns) first guess for every cell; only the free cells of it are used.

    Items with the same start are made together (one encoder batch), in their order.
    """
    start = torch.empty_like(fixed)
    height, width = canvas.height, canvas.width
    for name in dict.fromkeys(inits):
        chosen = [i for i, n in enumerate(inits) if n == name]
        if name in ('edit', 'refine'):
            start[chosen] = fixed[chosen]
            continue
        if name == 'random':
            for i in chosen:
                generator = torch.Generator().manual_seed(items[i].seed + 3)
                codes = torch.randint(0, vqgan.codebook.shape[0], canvas.tokens, generator=generator)
                start[i] = vqgan.embed_tokens(codes[None].to(fixed.device))[0]
            continue
        if name == 'mirror':
            pixels = soft_mirror_fill(sources[chosen], canvas)  # type: ignore[index]
        elif name == 'remove':
            region = torch.as_tensor(canvas.free_mask(), device=fixed.device)
            region = region.repeat_interleave(TOKEN_PX, 0).repeat_interleave(TOKEN_PX, 1)
            pixels = region_fill(sources[chosen], region)  # type: ignore[index]
        elif name == 'grey':
            pixels = torch.full((len(chosen), 3, height, width), 0.5, device=fixed.device)
        else:  # 'noise': pixel noise from each item's seed
            pixels = torch.stack(
                [torch.rand(3, height, width, generator=torch.Generator().manual_seed(items[i].seed + 3)) for i in chosen]
            ).to(fixed.device)
        start[chosen] = vqgan.quantize(vqgan.encode(pixels))[0]
    return start


def _base_pixels(sources: torch.Tensor | None, canvas: Canvas, batch: int, device: torch.device) -> torch.Tensor:
    """(B, 3, H, W): the sources in their box, zeros elsewhere: the pixels the decode windows leave alone."""
    base = torch.zeros(batch, 3, canvas.height, canvas.width, device=device)
    if sources is not None:
        left, top, right, bottom = canvas.source_box
        base[..., top:bottom, left:right] = sources
    return base


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
    image_targets: torch.Tensor | None,
    settings: DefaultSettings,
) -> torch.Tensor:
    """(B,) CLIP loss per image: weighted mean θ²/2 to its text and to its image-prompt views (if any)."""
    per_text = torch.stack([spherical_distance_sq(e, t[None]).mean() for e, t in zip(embeddings, texts, strict=True)])
    if image_targets is None:
        return text_weights * per_text
    per_image = torch.stack([spherical_distance_sq(e, m).mean() for e, m in zip(embeddings, image_targets, strict=True)])
    return text_weights * per_text + settings.image_weight * per_image
