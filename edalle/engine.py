"""The engine that serves the operations: load a preset's models once, then draw, decode, rank and expand.

`Engine.imagine(requests)` is DALL·E mini end to end for a batch of prompts: normalise and
tokenise each prompt, sample N image-token grids per prompt in one compiled JAX call, decode
them with the VQGAN (torch) and rank them best-first by CLIP. The hand-off from JAX to torch
is the integer token grid, cheap and framework-neutral.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from edalle.config import IMAGE_GRID_SIDE, IMAGE_TOKEN_COUNT
from edalle.loading import load_bart, load_clip, load_tokenizer, load_vqgan_for, prepare_sampler_for
from edalle.operations.imagine import MAX_CANDIDATES, MAX_SEED, Candidate, ImagineRequest, ImagineResult, Knobs, validate
from edalle.presets import Preset, data_dir_from_env, get_preset
from edalle.weights import ensure_tiny, require

if TYPE_CHECKING:
    import torch

    from edalle.expander.api import CanvasRequest, CanvasResult, ExpandRequest, ExpandResult
    from edalle.models.clip import ClipModel
    from edalle.models.sampling import SampleRequest, SampleResult
    from edalle.models.vqgan import VQGAN
    from edalle.text import TextTokenizer


CODE_COLOURS_FILE = 'code-colours.npy'  # beside the VQGAN's weights: each code's mean colour, for previews
PREVIEW_SCALE = 4  # a preview paints each token as 4 × 4 pixels: 64 × 64 a candidate


def decode_chunk(device: str) -> int:
    """How many 256×256 images one VQGAN decode takes at once.

    On CPU a batch of nine needs 1.5 GB of activations and is no faster per image than three
    (0.5 GB; measured 1.64 and 1.61 s per image on 2 Zen 4 cores); a GPU decodes the grid in one go.
    """
    return 3 if device == 'cpu' else 9


# progress(stage, done, total, preview): stages are 'encode', 'sample', 'decode', 'rank'
# for imagine, a canvas's kind ('expand', 'zoom', 'pan', …) for a canvas run and 'load' for `Engine.load`;
# `preview` is an optional PIL image.
Progress = Callable[[str, int, int, 'Image.Image | None'], None]


def _set_jax_defaults(data_dir: Path) -> None:
    """Share the GPU with torch and keep compiled programs across runs.

    Must run before JAX initialises a backend: JAX would otherwise grab 75 % of GPU memory
    that the VQGAN and CLIP need, and recompile the decode loop at every start.
    """
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
    import jax

    if os.environ.get('EDALLE_JAX_CACHE', '1') != '0' and not jax.config.jax_compilation_cache_dir:
        cache = data_dir / 'jax-cache'
        cache.mkdir(parents=True, exist_ok=True)
        jax.config.update('jax_compilation_cache_dir', str(cache))
        jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


class Engine:
    """Models loaded once; `imagine`, `run_canvas` (and `expand`) and `upscale` run on them many times."""

    def __init__(
        self,
        preset: Preset,
        data_dir: Path,
        tokenizer: TextTokenizer,
        bart_config: Any,
        sampler_weights: Any,
        vqgan: VQGAN,
        clip: ClipModel,
        device: str,
        dtype: str,
    ) -> None:
        self.preset = preset
        self.data_dir = data_dir
        self.tokenizer = tokenizer
        self.bart_config = bart_config
        self.sampler_weights = sampler_weights  # sampling.SamplerWeights, in the compute dtype
        self.vqgan = vqgan
        self.clip = clip
        self.device = device
        self.dtype = dtype
        self._upscaler: Any = None  # loaded on the first upscale: it is the one model not every worker needs
        self._code_colours: np.ndarray | None = None  # previews of grids being sampled (`code_colours`)

    @classmethod
    def load(
        cls,
        preset: str = 'mini',
        data_dir: str | Path | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        progress: Progress | None = None,
    ) -> Engine:
        """Load every model of a preset. `tiny` is generated on first use; others must be on disk.

        `dtype` is the DalleBart compute type: 'float32' (default on CPU), 'bfloat16' (default
        on GPU) or 'float16'. `progress` hears ('load', done, 5) as each of the five parts is ready.
        """
        chosen = get_preset(preset)
        root = data_dir_from_env(data_dir)
        if chosen.generated:
            ensure_tiny(root)
        require(chosen, root)
        _set_jax_defaults(root)
        import torch

        device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
        dtype = dtype or ('float32' if device == 'cpu' else 'bfloat16')

        def step(done: int) -> None:
            if progress is not None:
                progress('load', done, 5, None)

        step(0)
        tokenizer = load_tokenizer(chosen, root)
        step(1)
        bart_config, bart_params = load_bart(chosen, root)
        step(2)
        sampler_weights = prepare_sampler_for(bart_config, bart_params, dtype)
        step(3)
        vqgan = load_vqgan_for(chosen, root, device)
        step(4)
        clip = load_clip(chosen, root, device)
        step(5)
        return cls(chosen, root, tokenizer, bart_config, sampler_weights, vqgan, clip, device, dtype)

    # ----------------------------------------------------------------------- imagine

    def imagine(
        self, requests: list[ImagineRequest], progress: Progress | None = None, *, previews: bool = False
    ) -> list[ImagineResult]:
        """N ranked candidates for each of M prompts, every request with its own knobs, in one sampling call.

        With `previews`, `progress('sample', done, 256, previews)` gets after each chunk a picture of every
        request's grid as it forms, `{request index: PIL image}` (`preview_grids`); the tokens are the same
        with previews on or off.
        """
        report = progress or (lambda stage, done, total, preview=None: None)
        for request in requests:
            validate(request)
        timings: dict[str, float] = {}

        started = time.perf_counter()
        prompts = [self.tokenizer.encode_prompt(r.prompt) for r in requests]
        negatives = [self.tokenizer.encode_prompt(r.knobs.negative) if r.knobs.negative.strip() else None for r in requests]
        seeds = [r.seed if r.seed is not None else random.randint(0, MAX_SEED - MAX_CANDIDATES) for r in requests]
        timings['text'] = time.perf_counter() - started
        report('encode', len(requests), len(requests), None)

        started = time.perf_counter()
        tokens_by_request = self.sample(
            [
                self.sample_request(prompt, negative, [seed + j for j in range(request.n)], request.knobs)
                for request, prompt, negative, seed in zip(requests, prompts, negatives, seeds, strict=True)
            ],
            progress=lambda done, total: report('sample', done, total, None),
            preview=self.preview_grids(report) if previews else None,
        ).tokens
        timings['sample'] = time.perf_counter() - started

        started = time.perf_counter()
        all_tokens = np.concatenate([t.reshape(-1, IMAGE_GRID_SIDE, IMAGE_GRID_SIDE) for t in tokens_by_request])
        pixels = self.decode(all_tokens, report)
        timings['decode'] = time.perf_counter() - started

        started = time.perf_counter()
        results = []
        offset = 0
        for i, (request, prompt, negative, seed) in enumerate(zip(requests, prompts, negatives, seeds, strict=True)):
            batch = pixels[offset : offset + request.n]
            scores = self.rank(batch, prompt.normalized.strip() or request.prompt, negative.normalized if negative else '')
            order = np.argsort(-scores, kind='stable')
            images = images_from_pixels(batch)
            candidates = [
                Candidate(
                    index=rank,
                    image=images[j],
                    tokens=all_tokens[offset + j].astype(np.int32),
                    score=float(scores[j]),
                    seed=seed + int(j),
                )
                for rank, j in enumerate(order)
            ]
            offset += request.n
            results.append(
                ImagineResult(
                    prompt=request.prompt,
                    normalized_prompt=prompt.normalized,
                    truncated=prompt.encoded.truncated,
                    token_count=prompt.encoded.token_count,
                    seed=seed,
                    candidates=candidates,
                    timings=timings,
                    knobs=request.knobs,
                )
            )
            report('rank', i + 1, len(requests), None)
        timings['rank'] = time.perf_counter() - started
        return results

    # The primitives the sampling operations compose (imagine, vary, repaint by tokens).

    def sample_request(self, prompt: Any, negative: Any, seeds: list[int], knobs: Knobs, **forcing: Any) -> SampleRequest:
        """One prompt's candidates for `sample`: its tokens, its negative text's (or the empty prompt), its knobs,
        and any forced tokens (`forced_tokens`, `forced_mask`, `score_forced_suffix`: see `SampleRequest`)."""
        from edalle.models.sampling import SampleRequest, SamplingSettings

        settings = SamplingSettings(
            top_k=knobs.top_k, top_p=knobs.top_p, temperature=float(knobs.temperature), cond_scale=float(knobs.cond_scale)
        )
        return SampleRequest(
            prompt.encoded.ids,
            prompt.encoded.attention_mask,
            seeds,
            settings,
            negative_ids=negative.encoded.ids if negative is not None else None,
            negative_mask=negative.encoded.attention_mask if negative is not None else None,
            **forcing,
        )

    def sample(self, requests: list[SampleRequest], **kwargs: Any) -> SampleResult:
        """Every request's image tokens in one compiled sampling call (`sampling.sample_image_tokens`)."""
        from edalle.models.sampling import sample_image_tokens

        uncond = self.tokenizer.unconditional()
        return sample_image_tokens(
            self.sampler_weights,
            self.bart_config,
            requests,
            uncond.ids,
            uncond.attention_mask,
            codebook_count=self.vqgan.codebook.shape[0],
            **kwargs,
        )

    def rank(self, pixels: torch.Tensor, prompt: str, negative: str = '') -> np.ndarray:
        """CLIP scores (B,): 100 × cos(image, prompt), minus 100 × cos(image, negative) where there is a negative."""
        scores = self.clip.score(pixels, prompt).cpu().numpy()
        if negative.strip():
            scores = scores - self.clip.score(pixels, negative).cpu().numpy()
        return scores

    def preview_grids(self, report: Progress) -> Callable[[int, list[np.ndarray]], None]:
        """A `sampling` preview callback: each request's candidates as they form, painted in their codes' mean
        colours (`code_colours`), a numbered grid per request, reported as `{request index: image}`."""
        from edalle.grid import make_grid
        from edalle.models.code_colours import paint_tokens

        colours = self.code_colours()

        def preview(done: int, tokens: list[np.ndarray]) -> None:
            pictures = {}
            for index, rows in enumerate(tokens):
                painted = paint_tokens(rows, colours, scale=PREVIEW_SCALE)  # (N, 64, 64, 3)
                pictures[index] = make_grid([Image.fromarray(p, 'RGB') for p in painted])
            report('sample', done, IMAGE_TOKEN_COUNT, pictures)

        return preview

    def code_colours(self) -> np.ndarray:
        """Each VQGAN code's mean colour (N, 3), fitted once and kept beside the VQGAN's weights."""
        if self._code_colours is None:
            from edalle.models.code_colours import fit_code_colours
            from edalle.presets import models_dir

            path = self.preset.vqgan_files.path(models_dir(self.data_dir)) / CODE_COLOURS_FILE
            try:
                colours = np.load(path)
            except (OSError, ValueError):
                colours = None
            if colours is None or colours.shape != (self.vqgan.codebook.shape[0], 3):
                colours = fit_code_colours(self.vqgan)
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, colours)
            self._code_colours = colours
        return self._code_colours

    def decode(self, tokens: np.ndarray, report: Progress | None = None) -> torch.Tensor:
        """(B, 16, 16) codes → (B, 3, 256, 256) pixels in [0, 1], `decode_chunk` images at a time."""
        import torch

        chunks = []
        size = decode_chunk(self.device)
        with torch.inference_mode():
            for start in range(0, len(tokens), size):
                codes = torch.from_numpy(tokens[start : start + size].astype(np.int64)).to(self.device)
                chunks.append(self.vqgan.decode_tokens(codes).float())
                if report is not None:
                    report('decode', min(start + size, len(tokens)), len(tokens), None)
        return torch.cat(chunks)

    # ----------------------------------------------------------------------- expand

    def expand(
        self, request: ExpandRequest, progress: Progress | None = None, should_cancel: Callable[[], bool] | None = None
    ) -> ExpandResult:
        """Widen one picture with E-DALL-E (`edalle.expander.api.expand`); several at once: `expand_batch`."""
        from edalle.expander.api import expand

        return expand(self.vqgan, self.clip, request, progress=progress, should_cancel=should_cancel)

    def run_canvas(
        self, request: CanvasRequest, progress: Progress | None = None, should_cancel: Callable[[], bool] | None = None
    ) -> CanvasResult:
        """One canvas of the expander (a ratio, zoom, pan, square, dream …; `edalle.expander.api.run`): what every
        optimising operation's runner calls. Progress stages are the canvas's kind ('expand', 'zoom', …)."""
        from edalle.expander.api import run

        return run(self.vqgan, self.clip, request, progress=progress, should_cancel=should_cancel)

    # ----------------------------------------------------------------------- upscale

    def upscale(self, image: Image.Image, progress: Callable[[int, int], None] | None = None) -> Image.Image:
        """×4 super-resolution (`edalle.models.upscaler`), tiled; the network loads on first use."""
        if self._upscaler is None:
            from edalle.upscale import load_upscaler_for

            self._upscaler = load_upscaler_for(self.preset.name, self.data_dir, self.device)
        return self._upscaler.upscale(image, progress=progress)


def images_from_pixels(pixels: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [0, 1] → PIL RGB images, rounding to the nearest 8-bit value."""
    import torch

    array = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, 'RGB') for a in array]


__all__ = ['Engine', 'decode_chunk', 'images_from_pixels']
