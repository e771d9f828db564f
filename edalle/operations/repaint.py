"""repaint (by tokens): redraw a region of a picture's token grid under a new prompt, the rest forced.

The region is a set of cells of the picture's 4 × 4 grid (A1–D4, each 4 × 4 tokens: `expander.regions`).
DalleBart samples the region's tokens under the new prompt while every token outside it is forced to the
picture's own. Sampling runs top to bottom, so the tokens after the region were never conditioned on what
was drawn in it: a sample can clash with what follows. Each sample is therefore scored by how likely the
model finds the kept tokens after the region given what it drew (`SampleRequest.score_forced_suffix`: the
conditional log-likelihood of every forced token after the first sampled one, accumulated in the sampling
loop), per token, plus CLIP: score = 100 · cos(picture, prompt) (minus the negative's, as imagine ranks) +
`LIKELIHOOD_WEIGHT` · mean log-likelihood. `SAMPLES` are drawn in one call and the best is kept; the others'
scores are recorded. The picture is the source with only the region (and a one-token feather band around
it) taken from a decode (`token_grid.redraw`): pixels beyond the band are the source's, bit for bit.

This is the fast method (a sampling job, `daily_imagines`); `repaint_clip` is the E-DALL-E one (CLIP-guided
optimisation of the region's latents, `daily_edits`). The bot offers both behind one command.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edalle.errors import RunFailed
from edalle.operations.base import (
    PICTURE_SIDE,
    Operation,
    Outcome,
    Picture,
    RequestError,
    RunContext,
    Source,
    WorkItem,
    load_source,
)
from edalle.operations.imagine import MAX_CANDIDATES, MAX_SEED, Knobs, validate_knobs
from edalle.operations.token_grid import GRID_SIDE, check_square, knobs_of, pixels_of, redraw, tokens_of

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from edalle.jobs.limits import Limits
    from edalle.jobs.store import JobRequest

SAMPLES = 4  # repaints drawn per job, the best kept (4 rows: the sampler's row bucket below 9)
LIKELIHOOD_WEIGHT = 10.0  # CLIP points per nat of mean log-likelihood of the kept tokens after the region
MAX_PROMPT_CHARS = 1000
GONE = 'The picture to repaint is gone. Pick it again and press 🖌.'
UPLOAD_GONE = 'The image to repaint is gone.'
NO_PROMPT = 'Say what the region should show, e.g. `.repaint B2:C3 a party hat`.'
CLIP_INSTEAD = ' Repaint it with the CLIP method instead (`--method clip`), which works on any size.'

Progress = Callable[..., None]


@dataclass(frozen=True)
class RepaintRequest:
    """A region of one 256 × 256 picture to redraw: its tokens and pixels, the cells, the prompt, samples, seed, knobs."""

    tokens: np.ndarray  # (16, 16) the picture's codes
    image: Image.Image  # the picture: every pixel beyond the region's feather band is kept
    region: str  # cells of the 4 × 4 grid: 'B2:C3', 'A1,B1', …
    prompt: str
    n: int = SAMPLES
    seed: int | None = None  # None: random, recorded
    knobs: Knobs = Knobs()


@dataclass(frozen=True)
class Sample:
    """One repaint drawn: its seed and scores (the kept one and the others)."""

    seed: int
    clip: float  # 100 · cos(picture, prompt), minus the negative's
    likelihood: float  # mean log-likelihood per kept token after the region (nats; 0 when none follows it)
    score: float  # clip + LIKELIHOOD_WEIGHT · likelihood


@dataclass
class RepaintResult:
    image: Image.Image  # the best sample, composited into the source
    tokens: np.ndarray  # (16, 16) its grid: the source's outside the region
    region: str  # the cells as typed, upper case ('B2:C3')
    cells: str  # every cell, row by row ('B2,C2,B3,C3')
    prompt: str
    normalized_prompt: str
    truncated: bool
    seed: int  # the best sample's
    samples: list[Sample]  # best first
    timings: dict[str, float] = field(default_factory=dict)
    knobs: Knobs = Knobs()


def region_canvas(region: str) -> Any:
    """The canvas of a region of a 256 × 256 picture; refuses a region that does not parse, is off the grid, or
    covers everything or nothing, with the grid's extent in the message (`RequestError`)."""
    from edalle.expander.canvas import canvas_for_region
    from edalle.expander.errors import ExpandError

    try:
        return canvas_for_region((PICTURE_SIDE, PICTURE_SIDE), region)
    except ExpandError as exc:
        raise RequestError(str(exc)) from None


def validate(request: RepaintRequest) -> None:
    """Refuse what cannot be repainted, in words for the member (raises `RequestError`)."""
    import numpy as np

    check_prompt(request.prompt)
    region_canvas(request.region)
    if not 1 <= request.n <= MAX_CANDIDATES:
        raise RequestError(f'The number of samples must be between 1 and {MAX_CANDIDATES} (got {request.n}).')
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED - MAX_CANDIDATES:
        raise RequestError(f'The seed must be a whole number from 0 to {MAX_SEED - MAX_CANDIDATES} (got {request.seed}).')
    if np.asarray(request.tokens).shape != (GRID_SIDE, GRID_SIDE):
        raise RequestError('Only a 256×256 picture (16×16 tokens) can be repainted by tokens.' + CLIP_INSTEAD)
    check_square(request.image.width, request.image.height, 'repaint by tokens', CLIP_INSTEAD)
    validate_knobs(request.knobs)


def check_prompt(prompt: object) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise RequestError(NO_PROMPT)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestError(f'The prompt is too long ({len(prompt)} characters; at most {MAX_PROMPT_CHARS}).')


def scored_positions(forced_mask: np.ndarray) -> np.ndarray:
    """(256,) bool: the forced positions after the first sampled one, whose log-likelihood the sampler sums."""
    import numpy as np

    first_sampled = int(np.argmin(forced_mask)) if not forced_mask.all() else forced_mask.size
    return forced_mask & (np.arange(forced_mask.size) > first_sampled)


def repaint(engine: Any, requests: list[RepaintRequest], progress: Progress | None = None) -> list[RepaintResult]:
    """Every request's samples in one sampling call (`Engine.sample`), each request's best kept.

    `progress` gets 'encode', 'sample', 'decode' and 'rank' as an imagine does.
    """
    import random
    import time

    import numpy as np

    report = progress or (lambda stage, done, total, preview=None: None)
    for request in requests:
        validate(request)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    prompts = [engine.tokenizer.encode_prompt(r.prompt) for r in requests]
    negatives = [engine.tokenizer.encode_prompt(r.knobs.negative) if r.knobs.negative.strip() else None for r in requests]
    seeds = [r.seed if r.seed is not None else random.randint(0, MAX_SEED - MAX_CANDIDATES) for r in requests]
    canvases = [region_canvas(r.region) for r in requests]
    kept = [kept_positions(canvas) for canvas in canvases]
    timings['text'] = time.perf_counter() - started
    report('encode', len(requests), len(requests), None)

    started = time.perf_counter()
    sampled = engine.sample(
        sample_requests(engine, requests, seeds), progress=lambda done, total: report('sample', done, total, None)
    )
    timings['sample'] = time.perf_counter() - started

    started = time.perf_counter()
    drawn = []
    for r, tokens, canvas in zip(requests, sampled.tokens, canvases, strict=True):
        grids = tokens.reshape(-1, GRID_SIDE, GRID_SIDE)
        drawn.append((grids, redraw(engine, grids, r.image, canvas)))
        report('decode', len(drawn), len(requests), None)
    timings['decode'] = time.perf_counter() - started

    started = time.perf_counter()
    results = []
    for i, (r, prompt, negative, seed, mask, canvas, suffix, (grids, images)) in enumerate(
        zip(requests, prompts, negatives, seeds, kept, canvases, sampled.suffix_scores, drawn, strict=True)
    ):
        pixels = pixels_of(images).to(engine.clip.device)
        clip = engine.rank(pixels, prompt.normalized.strip() or r.prompt, negative.normalized if negative else '')
        count = int(scored_positions(mask).sum())
        likelihood = np.asarray(suffix, np.float64) / count if count else np.zeros(r.n)
        scores = clip + LIKELIHOOD_WEIGHT * likelihood
        order = np.argsort(-scores, kind='stable')
        best = int(order[0])
        samples = [Sample(seed + int(j), float(clip[j]), float(likelihood[j]), float(scores[j])) for j in order]
        results.append(
            RepaintResult(
                image=images[best],
                tokens=grids[best].astype(np.int32),
                region=canvas.label,
                cells=cells_of(r.region),
                prompt=r.prompt,
                normalized_prompt=prompt.normalized,
                truncated=prompt.encoded.truncated,
                seed=seed + best,
                samples=samples,
                timings=timings,
                knobs=r.knobs,
            )
        )
        report('rank', i + 1, len(requests), None)
    timings['rank'] = time.perf_counter() - started
    return results


def kept_positions(canvas: Any) -> np.ndarray:
    """(256,) bool: the positions forced to the picture's tokens, every one outside the region."""
    return ~canvas.free_mask().reshape(-1)


def sample_requests(engine: Any, requests: list[RepaintRequest], seeds: list[int]) -> list[Any]:
    """Each request's samples for `Engine.sample`: every token outside the region forced, the kept tokens after
    it scored; sample j with seed + j."""
    import numpy as np

    out = []
    for r, seed in zip(requests, seeds, strict=True):
        negative = engine.tokenizer.encode_prompt(r.knobs.negative) if r.knobs.negative.strip() else None
        out.append(
            engine.sample_request(
                engine.tokenizer.encode_prompt(r.prompt),
                negative,
                [seed + j for j in range(r.n)],
                r.knobs,
                forced_tokens=np.asarray(r.tokens, np.int32).reshape(-1),
                forced_mask=kept_positions(region_canvas(r.region)),
                score_forced_suffix=True,
            )
        )
    return out


def cells_of(region: str) -> str:
    """Every cell a region names, sorted: 'B2:C3' → 'B2,C2,B3,C3'."""
    from edalle.expander.regions import describe_region, parse_region

    return describe_region(parse_region(region, (GRID_SIDE, GRID_SIDE)))


class Repaint(Operation):
    name = 'repaint'
    title = 'repaint'
    bucket = 'daily_imagines'
    compute = 'sampling'
    discord = 'bot.cogs.repaint'
    takes_picture = True
    batchable = True
    text_fields = ('prompt',)

    def check(self, payload: Mapping[str, Any], limits: Limits) -> None:
        check_prompt(payload.get('prompt'))
        check_square(payload.get('width'), payload.get('height'), 'repaint by tokens', CLIP_INSTEAD)
        region_canvas(str(payload.get('region') or ''))
        n, seed = SAMPLES if payload.get('n') is None else payload.get('n'), payload.get('seed')
        if not isinstance(n, int) or not 1 <= n <= MAX_CANDIDATES:
            raise RequestError(f'The number of samples must be between 1 and {MAX_CANDIDATES} (got {n}).')
        if seed is not None and (not isinstance(seed, int) or not 0 <= seed <= MAX_SEED - MAX_CANDIDATES):
            raise RequestError(f'The seed must be a whole number from 0 to {MAX_SEED - MAX_CANDIDATES} (got {seed}).')

    def compat_key(self, payload: Mapping[str, Any]) -> str:
        """Repaints of any regions batch (the call prefills the shortest common forced prefix); the sample count
        sets the row bucket."""
        return f'{self.name}:{payload.get("preset", "mini")}:{payload.get("n") or SAMPLES}'

    def compat_prefix(self, preset: str) -> str:
        return f'{self.name}:{preset}:'

    def label(self, payload: Mapping[str, Any]) -> str:
        return f'repaint {str(payload.get("region") or "").strip().upper()}'

    def run(self, engine: Any, items: Sequence[WorkItem], ctx: RunContext) -> list[Outcome]:
        """One sampling call for the batch; a bad item (its picture gone or not 256 × 256) fails alone."""
        outcomes: list[Outcome | None] = [None] * len(items)
        requests, positions = [], []
        for position, item in enumerate(items):
            made = self._request(engine, item)
            if isinstance(made, RunFailed):
                outcomes[position] = made
                continue
            requests.append(made)
            positions.append(position)
        if requests:
            ctx.check_cancel()
            for position, result in zip(positions, repaint(engine, requests, ctx.progress), strict=True):
                outcomes[position] = result_summary(result, items[position])
        assert all(outcome is not None for outcome in outcomes)
        return outcomes  # type: ignore[return-value]

    def _request(self, engine: Any, item: WorkItem) -> RepaintRequest | RunFailed:
        source = load_source(item, gone=GONE, upload_gone=UPLOAD_GONE)
        if isinstance(source, RunFailed):
            return source
        payload, picture, image = item.job.payload, source.picture, source.image
        if image.size != (PICTURE_SIDE, PICTURE_SIDE):
            return RunFailed(f'I can repaint by tokens only 256×256 pictures; this one is {image.width}×{image.height}.')
        request = RepaintRequest(
            tokens=tokens_of(engine, picture, image),
            image=image,
            region=str(payload.get('region') or ''),
            prompt=str(payload.get('prompt') or ''),
            n=int(payload.get('n') or SAMPLES),
            seed=payload.get('seed'),
            knobs=knobs_of(picture),
        )
        try:
            validate(request)
        except RequestError as exc:
            return RunFailed(str(exc))
        return request


def result_summary(result: RepaintResult, item: WorkItem) -> dict[str, Any]:
    from edalle.outputs import save_png

    job = item.job
    path = item.folder.file('repainted.png')
    save_png(result.image, path)
    picture = Picture(  # no `score`: members read a picture's score as CLIP's; the samples' scores are below
        0,
        item.folder.rel(path),
        PICTURE_SIDE,
        PICTURE_SIDE,
        tokens=result.tokens.tolist(),
        seed=result.seed,
        knobs=result.knobs.to_json(),
    )
    return {
        'pictures': [picture.to_json()],
        'method': 'tokens',
        'region': result.region,
        'cells': result.cells,
        'prompt': result.prompt,
        'normalized_prompt': result.normalized_prompt,
        'truncated': result.truncated,
        'seed': result.seed,
        'samples': [
            {'seed': s.seed, 'clip': round(s.clip, 4), 'likelihood': round(s.likelihood, 4), 'score': round(s.score, 4)}
            for s in result.samples
        ],
        'likelihood_weight': LIKELIHOOD_WEIGHT,
        'timings': {k: round(v, 4) for k, v in result.timings.items()},
        'parent_job_id': job.parent_job_id,
        'parent_index': job.parent_index,
    }


OPERATION = Repaint()


def request(
    *,
    user_id: int,
    guild_id: int | None,
    channel_id: int | None,
    width: int,
    height: int,
    parent_job_id: int | None = None,
    parent_index: int | None = None,
    source_path: str | None = None,
    source_name: str | None = None,
    region: str,
    prompt: str,
    n: int = SAMPLES,
    seed: int | None = None,
    preset: str = 'mini',
    request_key: str | None = None,
    priority: int = 0,
    admin: bool = False,
) -> JobRequest:
    """Repaint `region` ('B2:C3', 'A1,B1') of picture `parent_index` of job `parent_job_id` (`width` × `height`,
    checked: 256 × 256) by tokens under `prompt`; `n` samples, the best kept."""
    payload = {
        'region': region.strip().upper(),
        'prompt': prompt,
        'n': n,
        'seed': seed,
        'width': width,
        'height': height,
        'preset': preset,
    }
    return OPERATION.build(
        payload,
        user_id=user_id,
        guild_id=guild_id,
        channel_id=channel_id,
        source=Source.of(parent_job_id, parent_index, source_path, source_name),
        request_key=request_key,
        priority=priority,
        admin=admin,
    )
