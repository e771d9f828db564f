"""What the engine, the worker and the CLI call: `run` one canvas request, or `run_batch` several; `expand` for ratios.

Every operation is a canvas (`edalle.expander.canvas`: a ratio, zoom, pan, square, region or
dream, built from the source's size) and one request (`CanvasRequest`): the source picture
(and its token grid when it is a generated candidate), the prompt, a negative prompt, steps,
seed, how to start, and how often to keep a time-lapse frame. `prepare_canvas` checks everything
a user typed before any model runs, so a bad step count costs nothing. The progress callback
gets (canvas.stage, done, total, preview) after each step ('expand' for a ratio); `should_cancel`
is asked between steps, and a True raises `ExpandCancelled`.

`ExpandRequest` / `expand` / `expand_batch` are the ratio expansion as it has always been
called (same results, bit for bit): a request with a ratio instead of a canvas.
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

from edalle.expander.canvas import MAX_CANVAS_PX, Canvas, canvas_for_ratio
from edalle.expander.classic import ClassicSettings, Progress, run_classic
from edalle.expander.default import CanvasItem, DefaultSettings, run_canvas
from edalle.expander.errors import ExpandError
from edalle.expander.frames import FRAME_PX, Frame
from edalle.expander.geometry import TOKEN_PX, Geometry
from edalle.expander.sources import fit_picture

Method = Literal['default', 'classic']
METHODS: tuple[str, ...] = ('default', 'classic')
MAX_STEPS = 1000
MAX_CUTOUTS = 128
MAX_SEED = 2**31 - 1
MAX_PROMPT_CHARS = 1000


@dataclass(frozen=True)
class CanvasRequest:
    """One picture to make on `canvas`. See the module docstring and `canvas.INITS` for `init`."""

    canvas: Canvas
    source_image: Image.Image | None = None  # canvas.source_px (a zoom that shrinks: the picture as given); None: dream
    source_tokens: np.ndarray | None = None  # its codes under this VQGAN, if generated (rows, columns)
    prompt: str = ''  # guidance text; empty: the picture alone guides (as an image prompt); a dream needs one
    negative_prompt: str = ''  # pushed away from, by a bounded hinge (`losses.negative_hinge`)
    steps: int | None = None  # None: the method's default
    seed: int | None = None  # None: random, recorded in the result
    init: str = 'auto'  # how to start (`canvas.INITS`): 'auto', repaint 'edit'/'remove', dream 'random'/'grey'/…
    record_every: int = 0  # keep a time-lapse frame every this many steps; 0: none
    method: str = 'default'  # 'classic' only for a ratio
    cutouts: int | None = None  # CLIP views per step; None: the method's default


@dataclass
class CanvasResult:
    image: Image.Image
    width: int
    height: int
    settings: dict[str, Any]  # everything needed to run it again: method settings, canvas, seed
    seed: int
    losses: list[float]  # per step
    timings: dict[str, float] = field(default_factory=dict)  # seconds
    frames: list[Frame] = field(default_factory=list)  # time-lapse, oldest first; the last is `image` (at frame size)
    tokens: np.ndarray | None = None  # (rows, columns) codes of the final canvas (default method)


ExpandResult = CanvasResult  # what a ratio expansion has always returned (same fields, plus frames and tokens)


@dataclass(frozen=True)
class PreparedCanvas:
    """A validated request: its source fitted to the canvas, its tokens if usable, settings, seed and start."""

    request: CanvasRequest
    source: Image.Image | None
    tokens: np.ndarray | None
    settings: DefaultSettings | ClassicSettings
    seed: int
    init: str


def prepare_canvas(request: CanvasRequest, codebook_size: int | None = None) -> PreparedCanvas:
    """Check a request and fill in its defaults. Raises ExpandError with a message for the user."""
    canvas = request.canvas
    if request.method not in METHODS:
        raise ExpandError(f'Unknown method {request.method!r}; choose one of: {", ".join(METHODS)}.')
    if request.method == 'classic' and canvas.geometry is None:
        raise ExpandError(
            f'The classic method only widens a picture to a ratio; use the default method to {canvas.kind} it.'
        )
    if request.steps is not None and not 1 <= request.steps <= MAX_STEPS:
        raise ExpandError(f'The number of steps must be between 1 and {MAX_STEPS} (got {request.steps}).')
    if request.cutouts is not None and not 1 <= request.cutouts <= MAX_CUTOUTS:
        raise ExpandError(f'The number of cutouts must be between 1 and {MAX_CUTOUTS} (got {request.cutouts}).')
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
        raise ExpandError(f'The seed must be a whole number from 0 to {MAX_SEED} (got {request.seed}).')
    for what, text in (('prompt', request.prompt), ('negative prompt', request.negative_prompt)):
        if len(text) > MAX_PROMPT_CHARS:
            raise ExpandError(f'The {what} is too long ({len(text)} characters; at most {MAX_PROMPT_CHARS}).')
    if request.negative_prompt.strip() and not request.prompt.strip():
        raise ExpandError('A negative prompt needs a prompt to weigh it against; describe what you want too.')
    if canvas.mode == 'dream' and not request.prompt.strip():
        raise ExpandError('A dream starts from words alone: give a prompt, e.g. `a lighthouse in a storm, oil painting`.')
    if canvas.mode == 'repaint' and not request.prompt.strip():
        raise ExpandError('Say what the region should show, e.g. `a red sailing boat`, or `calm sea` to clear it.')
    if not 0 <= request.record_every <= MAX_STEPS:
        raise ExpandError(f'Frames can be kept every 1 to {MAX_STEPS} steps, or 0 for none (got {request.record_every}).')
    if request.method == 'classic' and (request.record_every or request.negative_prompt.strip()):
        raise ExpandError('The classic method keeps no frames and takes no negative prompt; use the default method.')
    init = canvas.resolve_init(request.init)
    source, tokens = _fit_source(request, codebook_size)
    settings: DefaultSettings | ClassicSettings
    base = DefaultSettings() if request.method == 'default' else ClassicSettings()
    settings = replace(base, steps=request.steps or base.steps, cutn=request.cutouts or base.cutn)
    seed = request.seed if request.seed is not None else random.randint(0, MAX_SEED)
    return PreparedCanvas(request, source, tokens, settings, seed, init)


def _fit_source(request: CanvasRequest, codebook_size: int | None) -> tuple[Image.Image | None, np.ndarray | None]:
    """The source at the size the canvas holds it (a shrinking zoom resizes it, and its tokens no longer apply)."""
    canvas = request.canvas
    if canvas.source is None:
        if request.source_image is not None:
            raise ExpandError('This dream starts from nothing; to start from a picture, refine it instead.')
        return None, None
    if request.source_image is None:
        raise ExpandError(f'A {canvas.kind} needs a picture to start from.')
    image = request.source_image.convert('RGB')
    tokens = request.source_tokens
    if image.size != canvas.source_px:
        if canvas.source_scale == 1.0:
            raise ExpandError(
                f'The picture is {image.width}×{image.height} px but this {canvas.kind} was made for '
                f'{canvas.source_px[0]}×{canvas.source_px[1]}; build the canvas from the picture it is for.'
            )
        image, tokens = image.resize(canvas.source_px, Image.Resampling.LANCZOS), None
    if tokens is not None:
        _check_tokens(np.asarray(tokens), image.size, codebook_size)
    return image, tokens


def _check_tokens(tokens: np.ndarray, size: tuple[int, int], codebook_size: int | None) -> None:
    rows, columns = size[1] // TOKEN_PX, size[0] // TOKEN_PX
    if tokens.shape != (rows, columns) or not np.issubdtype(tokens.dtype, np.integer):
        raise ExpandError(
            f'The source tokens must be a {rows}×{columns} grid of integers for a {size[0]}×{size[1]} picture '
            f'(got {tokens.shape}).'
        )
    if codebook_size is not None and (tokens.min() < 0 or tokens.max() >= codebook_size):
        raise ExpandError(
            f'The source tokens must be codes from 0 to {codebook_size - 1}; were they drawn by another model?'
        )


def run(
    vqgan: torch.nn.Module,
    clip: Any,
    request: CanvasRequest,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> CanvasResult:
    """Make one picture. See `CanvasRequest`; raises ExpandError (bad input) or ExpandCancelled."""
    return run_batch(vqgan, clip, [request], progress, should_cancel)[0]


def run_batch(
    vqgan: torch.nn.Module,
    clip: Any,
    requests: list[CanvasRequest],
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[CanvasResult]:
    """Make several pictures on one canvas, with one method, step and cutout count, optimised together.

    The default method runs them as one batch (each image's result depends only on its own
    request and seed, not on its batch-mates, up to float rounding); the classic method has
    no batch form in the original and runs them one after the other.
    """
    if not requests:
        return []
    codebook_size = int(vqgan.codebook.shape[0])
    prepared = [prepare_canvas(r, codebook_size) for r in requests]
    first = prepared[0]
    canvas = first.request.canvas
    for p in prepared[1:]:
        if (p.request.canvas, p.settings, p.request.record_every) != (canvas, first.settings, first.request.record_every):
            raise ExpandError('A batch must share canvas, method, steps, cutouts and frames; run the others separately.')
    started = time.perf_counter()
    frames: list[list[Frame]] = [[] for _ in prepared]
    tokens: list[np.ndarray | None] = [None for _ in prepared]
    if isinstance(first.settings, DefaultSettings):
        items = [
            CanvasItem(p.source, p.tokens, p.request.prompt, p.seed, p.request.negative_prompt, p.init) for p in prepared
        ]
        output = run_canvas(
            vqgan,
            clip,
            items,
            canvas,
            first.settings,
            progress=progress,
            should_cancel=should_cancel,
            record_every=first.request.record_every,
        )
        images, losses, frames, tokens = output.images, output.losses, output.frames, list(output.tokens)
    else:
        assert canvas.geometry is not None  # prepare_canvas refuses classic on other canvases
        images, losses = [], []
        for p in prepared:
            one = run_classic(
                vqgan,
                clip,
                p.source,  # type: ignore[arg-type]
                p.request.prompt,
                canvas.geometry,
                p.seed,
                first.settings,
                progress=progress,
                should_cancel=should_cancel,
            )
            images.append(one.images[0])
            losses.append(one.losses[0])
    seconds = time.perf_counter() - started
    results = []
    for i, (p, image, item_losses) in enumerate(zip(prepared, images, losses, strict=True)):
        default = isinstance(p.settings, DefaultSettings)
        settings = {
            **p.settings.describe(),
            **canvas.describe(),
            'seed': p.seed,
            'prompt': p.request.prompt,
            'source': _source_kind(p, default),
            'batch': len(requests),
        }
        if default:
            settings['init'] = p.init
            settings['decoded_tokens'] = canvas.decoded_tokens(p.settings.context_tokens)  # type: ignore[union-attr]
        if p.request.negative_prompt.strip():
            settings['negative_prompt'] = p.request.negative_prompt
        if p.request.record_every:
            settings['record_every'] = p.request.record_every
            settings['frame_px'] = FRAME_PX
        results.append(
            CanvasResult(
                image=image,
                width=image.width,
                height=image.height,
                settings=settings,
                seed=p.seed,
                losses=[round(v, 6) for v in item_losses],
                timings={canvas.stage: seconds, 'per_step': seconds / max(p.settings.steps, 1) / len(requests)},
                frames=frames[i],
                tokens=tokens[i],
            )
        )
    return results


def _source_kind(p: PreparedCanvas, default: bool) -> str:
    if p.source is None:
        return 'none'
    return 'tokens' if p.tokens is not None and default else 'pixels'  # the classic method always re-encodes pixels


# ------------------------------------------------------------------------------------------------ ratios


@dataclass(frozen=True)
class ExpandRequest:
    """A ratio expansion (`canvas_for_ratio`), as the engine and the CLI have always asked for one."""

    source_image: Image.Image  # any picture; one not in whole tokens is fitted (`sources.fit_picture`)
    prompt: str = ''  # guidance text; empty: the picture alone guides (as an image prompt)
    ratio: str = '16:9'
    source_tokens: np.ndarray | None = None  # codes of source_image under this VQGAN, if generated (16×16 for 256²)
    steps: int | None = None  # None: the method's default
    seed: int | None = None  # None: random, recorded in the result
    method: str = 'default'
    cutouts: int | None = None  # CLIP views per step; None: the method's default
    record_every: int = 0  # keep a time-lapse frame every this many steps; 0: none
    max_canvas_px: int = MAX_CANVAS_PX


@dataclass(frozen=True)
class Prepared:
    """A validated ratio request: its geometry, method settings and seed, and the canvas request it becomes."""

    request: ExpandRequest
    geometry: Geometry
    settings: DefaultSettings | ClassicSettings
    seed: int
    canvas_request: CanvasRequest


def prepare(request: ExpandRequest, codebook_size: int | None = None) -> Prepared:
    """Check a ratio request and fill in its defaults. Raises ExpandError with a message for the user."""
    if request.method not in METHODS:  # before the ratio, as it always was
        raise ExpandError(f'Unknown method {request.method!r}; choose one of: {", ".join(METHODS)}.')
    source, tokens = request.source_image.convert('RGB'), request.source_tokens
    if source.width % TOKEN_PX or source.height % TOKEN_PX:  # not in whole tokens: fitted, and its tokens (if any) are off
        source, tokens = fit_picture(source, max_long_px=request.max_canvas_px), None
    canvas = canvas_for_ratio(source.size, request.ratio, request.max_canvas_px)
    canvas_request = CanvasRequest(
        canvas=canvas,
        source_image=source,
        source_tokens=tokens,
        prompt=request.prompt,
        steps=request.steps,
        seed=request.seed,
        record_every=request.record_every,
        method=request.method,
        cutouts=request.cutouts,
    )
    p = prepare_canvas(canvas_request, codebook_size)
    assert canvas.geometry is not None
    return Prepared(request, canvas.geometry, p.settings, p.seed, replace(canvas_request, seed=p.seed))


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
    """Widen several pictures of one geometry, method, step and cutout count, optimised together (`run_batch`)."""
    if not requests:
        return []
    codebook_size = int(vqgan.codebook.shape[0])
    prepared = [prepare(r, codebook_size) for r in requests]
    first = prepared[0]
    for p in prepared[1:]:
        if (p.geometry, p.settings) != (first.geometry, first.settings):
            raise ExpandError('A batch must share ratio, method, steps and cutouts; run the others separately.')
    return run_batch(vqgan, clip, [p.canvas_request for p in prepared], progress, should_cancel)
