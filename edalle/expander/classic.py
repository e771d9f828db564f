"""The original E-DALL-E expander, step for step: the baseline.

The original is `E_DALL_E_Image_Expander.ipynb` of github.com/robgon-art/e-dall-e (July 2022, CC BY-SA 4.0,
so it is re-implemented from its behaviour, not copied), itself Katherine Crowson's VQGAN+CLIP "z+quantize"
notebook (MIT) with kornia augmentations, wrapped to pad the canvas and hold the centre.

1. Edge-fill the canvas (8-px row colours, 32-px cross-fade inside the source), encode it
   with the VQGAN and quantise: z0, and z = z0 is the variable, centre included.
2. Targets: the prompt's CLIP text embedding, and 64 augmented cutouts of the source as an
   image prompt (fixed for the run).
3. Every step: straight-through quantise z, decode, clamp (gradient-aware), 64 cutouts
   (Python loop, Lanczos + bicubic, five kornia augmentations, noise), CLIP, loss = mean
   θ²/2 to the text + mean θ²/2 over all 64×64 image-prompt pairs; Adam (lr 0.1) on all of
   z; clamp z into the codebook's per-channel box; put the source columns back (hard in
   the middle, 1/3 and 2/3 blends in the two outer columns on each side).
4. Output: the VQGAN decode of the final z, cast to uint8 by truncation. No paste-back.

What differs, and why:
- tall canvases restore rows, the transpose of the wide rule (the original crashed there);
- `steps` updates are made and the image after the last one is returned (the original
  made 201 updates and returned the frame after 199, an off-by-one);
- the seed is settable (the original drew a fresh one each run);
- prompt weights/stops (`text:w:s|…`) are not parsed: the bot's prompts are plain text,
  and a colon in a prompt must not change its meaning.
The original's per-step cost is kept with `faithful_io` (on by default): each step's frame
goes to the CPU as uint8 and is PNG-encoded (written to `frames_dir` if given), and every
`display_every` steps one more decode runs for display (here it feeds the preview).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from edalle.expander.cutouts import ClassicCutouts
from edalle.expander.edge_fill import edge_fill
from edalle.expander.errors import ExpandCancelled
from edalle.expander.geometry import Geometry
from edalle.expander.images import to_images, to_pixels
from edalle.expander.losses import clamp_with_grad, prompt_loss

# progress(stage, done, total, preview), as edalle.engine.Progress
Progress = Callable[[str, int, int, 'Image.Image | None'], None]
# observer(step, z): called after each update with the latents; for tests and instrumentation
Observer = Callable[[int, torch.Tensor], None]


@dataclass(frozen=True)
class ClassicSettings:
    steps: int = 200
    cutn: int = 64
    cut_pow: float = 1.0
    lr: float = 0.1
    text_weight: float = 1.0
    image_weight: float = 1.0  # the source as an image prompt
    display_every: int = 20
    faithful_io: bool = True

    def describe(self) -> dict[str, object]:
        return {'method': 'classic', **asdict(self)}


@dataclass
class MethodOutput:
    images: list[Image.Image]
    losses: list[list[float]]  # per image, per step
    steps: int


def classic_keep_weights(geometry: Geometry) -> torch.Tensor:
    """(rows, columns) weight of z0 in the restore z ← (1 − w)·z + w·z0 after every step.

    Wide, source columns [L, L + n): L → 1/3, L+1 → 2/3, L+2 … L+n−3 → 1, L+n−2 → 2/3,
    L+n−1 → 1/3; new columns 0. Tall is the transpose (rows instead of columns).
    """
    if geometry.orientation == 'tall':
        return classic_keep_weights(geometry.transposed()).T.contiguous()
    rows, columns = geometry.tokens
    left, count = geometry.offset[1], geometry.source_tokens[1]
    weights = torch.zeros(rows, columns)
    weights[:, left + 2 : left + count - 2] = 1.0
    weights[:, [left, left + count - 1]] = 1 / 3
    weights[:, [left + 1, left + count - 2]] = 2 / 3
    return weights


def codebook_box(codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel min and max over the codebook (N, D) → two (1, D, 1, 1) tensors."""
    return codebook.min(0).values.view(1, -1, 1, 1), codebook.max(0).values.view(1, -1, 1, 1)


def run_classic(
    vqgan: torch.nn.Module,
    clip: object,
    source: Image.Image,
    prompt: str,
    geometry: Geometry,
    seed: int,
    settings: ClassicSettings | None = None,
    *,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    observer: Observer | None = None,
    frames_dir: Path | None = None,
) -> MethodOutput:
    """Expand one 256×256 `source` to `geometry` the original way. See the module docstring."""
    settings = settings or ClassicSettings()
    device = clip.device  # type: ignore[attr-defined]
    cuda = torch.device(device).type == 'cuda'
    with torch.random.fork_rng(devices=[torch.device(device)] if cuda else []):
        torch.manual_seed(seed)
        return _run(vqgan, clip, source, prompt, geometry, settings, device, progress, should_cancel, observer, frames_dir)


def _run(
    vqgan: torch.nn.Module,
    clip: object,
    source: Image.Image,
    prompt: str,
    geometry: Geometry,
    settings: ClassicSettings,
    device: torch.device,
    progress: Progress | None,
    should_cancel: Callable[[], bool] | None,
    observer: Observer | None,
    frames_dir: Path | None,
) -> MethodOutput:
    cuda = torch.device(device).type == 'cuda'
    canvas = to_pixels(edge_fill(source, geometry), device)  # (1, 3, H, W)
    with torch.no_grad():
        z0, _ = vqgan.quantize(vqgan.encode(canvas))  # (1, D, rows, columns), exact codebook rows
    z = z0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=settings.lr)
    z_min, z_max = codebook_box(vqgan.codebook.detach())
    keep = classic_keep_weights(geometry).to(device)[None, None]  # (1, 1, rows, columns)

    cutouts = ClassicCutouts(clip.image_size, settings.cutn, settings.cut_pow)  # type: ignore[attr-defined]
    text = clip.encode_text([prompt]) if prompt.strip() else None  # type: ignore[attr-defined]
    with torch.no_grad(), _clip_precision(cuda):
        image_targets = clip.encode_images(cutouts(to_pixels(source, device))).float()  # type: ignore[attr-defined]

    def synth(latents: torch.Tensor) -> torch.Tensor:
        z_q, _ = vqgan.quantize(latents)  # straight-through while latents need grad
        return clamp_with_grad(vqgan.decode_latents(z_q))

    if frames_dir is not None:
        frames_dir.mkdir(parents=True, exist_ok=True)
    losses: list[float] = []
    for step in range(settings.steps):
        if should_cancel is not None and should_cancel():
            raise ExpandCancelled(step, settings.steps)
        optimizer.zero_grad(set_to_none=True)
        pixels = synth(z)  # (1, 3, H, W)
        with _clip_precision(cuda):
            embeddings = clip.encode_images(cutouts(pixels)).float()  # type: ignore[attr-defined]
        loss = prompt_loss(embeddings, image_targets, settings.image_weight)
        if text is not None:
            loss = loss + prompt_loss(embeddings, text, settings.text_weight)
        preview = None
        if settings.faithful_io:
            _write_frame(pixels, frames_dir, step)
            if step % settings.display_every == 0:
                with torch.no_grad():
                    preview = to_images(synth(z.detach()), truncate=True)[0]
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            z.copy_(torch.maximum(torch.minimum(z, z_max), z_min))
            z.copy_((1 - keep) * z + keep * z0)
        losses.append(float(loss.detach()))
        if observer is not None:
            observer(step, z.detach())
        if progress is not None:
            progress('expand', step + 1, settings.steps, preview)
    with torch.no_grad():
        final = synth(z.detach())
    return MethodOutput(to_images(final, truncate=True), [losses], settings.steps)


def _write_frame(pixels: torch.Tensor, frames_dir: Path | None, step: int) -> None:
    """The original's `steps/{i:04}.png`: a GPU→CPU uint8 copy and a PNG encode every step."""
    frame = to_images(pixels, truncate=True)[0]
    if frames_dir is not None:
        frame.save(frames_dir / f'{step:04}.png')
    else:
        frame.save(io.BytesIO(), format='PNG')


def _clip_precision(cuda: bool) -> torch.autocast:
    """CLIP ran in fp16 on CUDA in the original (the openai loader keeps fp16 weights); fp32 on CPU."""
    return torch.autocast('cuda', dtype=torch.float16, enabled=cuda)
