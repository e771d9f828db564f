"""What the engine, the worker and the CLI call: `expand` one picture, or `expand_batch` several.

A request names its source (a 256×256 picture, plus its token grid when it is a generated
candidate), the guidance prompt, the target ratio and the method. Everything a user typed
is checked by `prepare` before any model runs, so a bad ratio or step count costs nothing.
The progress callback gets ('expand', done, total, preview) after each step; `should_cancel`
is asked between steps, and a True raises `ExpandCancelled`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from edalle.expander.classic import ClassicSettings, Progress, run_classic
from edalle.expander.default import DefaultItem, DefaultSettings, run_default
from edalle.expander.errors import ExpandError
from edalle.expander.geometry import Geometry, compute_geometry
from edalle.expander.sources import SOURCE_SIDE, fit_square

Method = Literal['default', 'classic']
METHODS: tuple[str, ...] = ('default', 'classic')
MAX_STEPS = 1000
MAX_CUTOUTS = 128
MAX_SEED = 2**31 - 1
MAX_PROMPT_CHARS = 1000


@dataclass(frozen=True)
class ExpandRequest:
    source_image: Image.Image  # the kept picture; fitted to 256×256 if it is not
    prompt: str = ''  # guidance text; empty: the picture alone guides (as an image prompt)
    ratio: str = '16:9'
    source_tokens: np.ndarray | None = None  # (16, 16) codes of source_image under this VQGAN, if generated
    steps: int | None = None  # None: the method's default
    seed: int | None = None  # None: random, recorded in the result
    method: str = 'default'
    cutouts: int | None = None  # CLIP views per step; None: the method's default


@dataclass
class ExpandResult:
    image: Image.Image
    width: int
    height: int
    settings: dict[str, Any]  # everything needed to run it again: method settings, geometry, seed
    seed: int
    losses: list[float]  # per step
    timings: dict[str, float] = field(default_factory=dict)  # seconds


@dataclass(frozen=True)
class Prepared:
    """A validated request: its geometry, method settings and seed."""

    request: ExpandRequest
    geometry: Geometry
    settings: DefaultSettings | ClassicSettings
    seed: int


def prepare(request: ExpandRequest, codebook_size: int | None = None) -> Prepared:
    """Check a request and fill in its defaults. Raises ExpandError with a message for the user."""
    if request.method not in METHODS:
        raise ExpandError(f'Unknown method {request.method!r}; choose one of: {", ".join(METHODS)}.')
    geometry = compute_geometry(request.ratio)
    if request.steps is not None and not 1 <= request.steps <= MAX_STEPS:
        raise ExpandError(f'The number of steps must be between 1 and {MAX_STEPS} (got {request.steps}).')
    if request.cutouts is not None and not 1 <= request.cutouts <= MAX_CUTOUTS:
        raise ExpandError(f'The number of cutouts must be between 1 and {MAX_CUTOUTS} (got {request.cutouts}).')
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
        raise ExpandError(f'The seed must be a whole number from 0 to {MAX_SEED} (got {request.seed}).')
    if len(request.prompt) > MAX_PROMPT_CHARS:
        raise ExpandError(f'The prompt is too long ({len(request.prompt)} characters; at most {MAX_PROMPT_CHARS}).')
    if request.source_tokens is not None:
        tokens = np.asarray(request.source_tokens)
        side = SOURCE_SIDE // 16
        if tokens.shape != (side, side) or not np.issubdtype(tokens.dtype, np.integer):
            raise ExpandError(f'The source tokens must be a {side}×{side} grid of integers (got {tokens.shape}).')
        if codebook_size is not None and (tokens.min() < 0 or tokens.max() >= codebook_size):
            raise ExpandError(
                f'The source tokens must be codes from 0 to {codebook_size - 1}; were they drawn by another model?'
            )
    settings: DefaultSettings | ClassicSettings
    base = DefaultSettings() if request.method == 'default' else ClassicSettings()
    settings = replace(base, steps=request.steps or base.steps, cutn=request.cutouts or base.cutn)
    seed = request.seed if request.seed is not None else random.randint(0, MAX_SEED)
    return Prepared(request, geometry, settings, seed)


def expand(
    vqgan: torch.nn.Module,
    clip: Any,
    request: ExpandRequest,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> ExpandResult:
    """Widen one picture. See `ExpandRequest`; raises ExpandError (bad input) or ExpandCancelled."""
    return expand_batch(vqgan, clip, [request], progress, should_cancel)[0]


def expand_batch(
    vqgan: torch.nn.Module,
    clip: Any,
    requests: list[ExpandRequest],
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[ExpandResult]:
    """Widen several pictures of one geometry, method, step and cutout count, optimised together.

    The default method runs them as one batch (each image's result depends only on its own
    request and seed, not on its batch-mates, up to float rounding); the classic method has
    no batch form in the original and runs them one after the other.
    """
    if not requests:
        return []
    codebook_size = int(vqgan.codebook.shape[0])
    prepared = [prepare(r, codebook_size) for r in requests]
    first = prepared[0]
    for p in prepared[1:]:
        if (p.geometry, p.settings) != (first.geometry, first.settings):
            raise ExpandError('A batch must share ratio, method, steps and cutouts; run the others separately.')
    sources = [_fit(p.request.source_image) for p in prepared]
    started = time.perf_counter()
    if isinstance(first.settings, DefaultSettings):
        items = [
            DefaultItem(source, p.request.source_tokens, p.request.prompt, p.seed)
            for p, source in zip(prepared, sources, strict=True)
        ]
        output = run_default(
            vqgan, clip, items, first.geometry, first.settings, progress=progress, should_cancel=should_cancel
        )
        images, losses = output.images, output.losses
    else:
        images, losses = [], []
        for p, source in zip(prepared, sources, strict=True):
            one = run_classic(
                vqgan,
                clip,
                source,
                p.request.prompt,
                p.geometry,
                p.seed,
                first.settings,
                progress=progress,
                should_cancel=should_cancel,
            )
            images.append(one.images[0])
            losses.append(one.losses[0])
    seconds = time.perf_counter() - started
    results = []
    for p, image, item_losses in zip(prepared, images, losses, strict=True):
        uses_tokens = p.request.source_tokens is not None and isinstance(p.settings, DefaultSettings)
        settings = {
            **p.settings.describe(),
            **p.geometry.describe(),
            'seed': p.seed,
            'prompt': p.request.prompt,
            'source': 'tokens' if uses_tokens else 'pixels',  # the classic method always re-encodes pixels
            'batch': len(requests),
        }
        results.append(
            ExpandResult(
                image=image,
                width=image.width,
                height=image.height,
                settings=settings,
                seed=p.seed,
                losses=[round(v, 6) for v in item_losses],
                timings={'expand': seconds, 'per_step': seconds / max(p.settings.steps, 1) / len(requests)},
            )
        )
    return results


def _fit(image: Image.Image) -> Image.Image:
    image = image.convert('RGB')
    return image if image.size == (SOURCE_SIDE, SOURCE_SIDE) else fit_square(image)
