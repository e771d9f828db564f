"""vary: redraw the lower part of a pick, keeping its upper token rows (Midjourney's Vary Subtle / Strong).

DalleBart draws a picture's 16 × 16 tokens row by row, top first, so a prefix of rows is the one part of
a picture it can keep while redrawing the rest consistently: 🪄 subtle keeps the first 12 token rows and
redraws the bottom 4 (a quarter), 🌀 strong keeps the first 4 and redraws the bottom 12. The kept rows
are forced (filled in one parallel decoder pass, `sampling._prefill`), the rest sampled with the pick's
prompt (or a new one), the pick's knobs and new seeds. Candidate j samples with seed + j exactly as an
imagine candidate does, so keeping a pick's own rows with its own seed draws the pick again.

Each candidate is the pick with only the redrawn rows (and a one-token feather band above them) taken from
a decode (`token_grid.redraw`): the kept part is the pick's own pixels. The nine are ranked best-first by
CLIP: 100 · cos(picture, prompt) (minus the negative prompt's, as imagine ranks) + `SIMILARITY_WEIGHT` ·
100 · cos(picture, pick), so among pictures that fit the prompt equally, the ones that stay closest to
the pick come first. The result has the shape of an imagine's (ranked pictures with their token grids and
knobs, a numbered grid, a manifest of kind 'vary'), so its candidates can be picked, varied, repainted and
widened like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edalle.errors import RequestTooLarge, RunFailed
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
from edalle.operations.imagine import (
    MAX_CANDIDATES,
    MAX_SEED,
    Candidate,
    ImagineResult,
    Knobs,
    validate_knobs,
    write_result,
)
from edalle.operations.token_grid import GRID_SIDE, check_square, kept_canvas, knobs_of, pixels_of, redraw, tokens_of

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from edalle.jobs.limits import Limits
    from edalle.jobs.store import JobRequest

#: strength → token rows kept from the top (of 16)
STRENGTHS: dict[str, int] = {'subtle': 12, 'strong': 4}
#: what each strength redraws, as members read it
CHANGES: dict[str, str] = {
    'subtle': 'keeps the top three quarters and redraws the bottom quarter',
    'strong': 'keeps the top quarter and redraws the bottom three quarters',
}
SIMILARITY_WEIGHT = 0.5  # CLIP points per point of 100 · cos(candidate, pick) in the ranking
MAX_PROMPT_CHARS = 1000
GONE = 'The picture to vary is gone. Pick it again and press 🪄 or 🌀.'
UPLOAD_GONE = 'The image to vary is gone.'
NO_PROMPT = 'This picture has no prompt of its own: say what the variation should show, e.g. `.vary subtle a red fox`.'

Progress = Callable[..., None]


@dataclass(frozen=True)
class VaryRequest:
    """Variations of one picture: its tokens and pixels, the prompt, how much to keep, how many, seed and knobs."""

    tokens: np.ndarray  # (16, 16) the pick's codes
    image: Image.Image  # the pick, 256 × 256: its kept pixels, and what the candidates are compared with
    prompt: str
    strength: str = 'subtle'
    n: int = 9
    seed: int | None = None  # None: a random seed, recorded in the result
    knobs: Knobs = Knobs()

    @property
    def kept_rows(self) -> int:
        return STRENGTHS[self.strength]


@dataclass
class VaryResult(ImagineResult):
    """An imagine's result (ranked candidates, scores combined as above) and what the variation kept."""

    strength: str = 'subtle'
    kept_rows: int = STRENGTHS['subtle']
    prompt_scores: list[float] = field(default_factory=list)  # by rank: 100 · cos(picture, prompt) − negative's
    similarities: list[float] = field(default_factory=list)  # by rank: 100 · cos(picture, pick)


def validate(request: VaryRequest) -> None:
    """Refuse what cannot be varied, in words for the member (raises `RequestError`)."""
    import numpy as np

    check_strength(request.strength)
    if not request.prompt or not request.prompt.strip():
        raise RequestError(NO_PROMPT)
    if len(request.prompt) > MAX_PROMPT_CHARS:
        raise RequestError(f'The prompt is too long ({len(request.prompt)} characters; at most {MAX_PROMPT_CHARS}).')
    if not 1 <= request.n <= MAX_CANDIDATES:
        raise RequestError(f'The number of variations must be between 1 and {MAX_CANDIDATES} (got {request.n}).')
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED - MAX_CANDIDATES:
        raise RequestError(f'The seed must be a whole number from 0 to {MAX_SEED - MAX_CANDIDATES} (got {request.seed}).')
    if np.asarray(request.tokens).shape != (GRID_SIDE, GRID_SIDE):
        raise RequestError('Only a 256×256 picture (16×16 tokens) can be varied.')
    check_square(request.image.width, request.image.height, 'vary')
    validate_knobs(request.knobs)


def check_strength(strength: object) -> None:
    if strength not in STRENGTHS:
        raise RequestError(
            f'Vary {strength!r}? Choose subtle (🪄, the bottom quarter) or strong (🌀, the bottom three quarters).'
        )


def vary(
    engine: Any, requests: list[VaryRequest], progress: Progress | None = None, *, previews: bool = False
) -> list[VaryResult]:
    """N ranked variations for each request, every request's candidates sampled in one call (`Engine.sample`).

    `progress` gets the imagine stages ('encode', 'sample', 'decode', 'rank'); with `previews`, 'sample' reports
    carry `{request index: grid}` as the rows form (`Engine.preview_grids`).
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
    timings['text'] = time.perf_counter() - started
    report('encode', len(requests), len(requests), None)

    started = time.perf_counter()
    sampled = engine.sample(
        sample_requests(engine, requests, seeds),
        progress=lambda done, total: report('sample', done, total, None),
        preview=engine.preview_grids(report) if previews else None,
    ).tokens
    timings['sample'] = time.perf_counter() - started

    started = time.perf_counter()
    drawn = []
    for r, tokens in zip(requests, sampled, strict=True):
        grids = tokens.reshape(-1, GRID_SIDE, GRID_SIDE)
        drawn.append((grids, redraw(engine, grids, r.image, variation_canvas(r.strength))))
        report('decode', len(drawn), len(requests), None)
    timings['decode'] = time.perf_counter() - started

    started = time.perf_counter()
    results = []
    for i, (r, prompt, negative, seed, (grids, images)) in enumerate(
        zip(requests, prompts, negatives, seeds, drawn, strict=True)
    ):
        pixels = pixels_of([*images, r.image]).to(engine.clip.device)  # the candidates, then the pick
        text = prompt.normalized.strip() or r.prompt
        prompt_scores, similarities = ranking_scores(engine.clip, pixels, text, negative.normalized if negative else '')
        scores = prompt_scores + SIMILARITY_WEIGHT * similarities
        order = np.argsort(-scores, kind='stable')
        candidates = [
            Candidate(
                index=rank, image=images[j], tokens=grids[j].astype(np.int32), score=float(scores[j]), seed=seed + int(j)
            )
            for rank, j in enumerate(order)
        ]
        results.append(
            VaryResult(
                prompt=r.prompt,
                normalized_prompt=prompt.normalized,
                truncated=prompt.encoded.truncated,
                token_count=prompt.encoded.token_count,
                seed=seed,
                candidates=candidates,
                timings=timings,
                knobs=r.knobs,
                strength=r.strength,
                kept_rows=r.kept_rows,
                prompt_scores=[float(prompt_scores[j]) for j in order],
                similarities=[float(similarities[j]) for j in order],
            )
        )
        report('rank', i + 1, len(requests), None)
    timings['rank'] = time.perf_counter() - started
    return results


def sample_requests(engine: Any, requests: list[VaryRequest], seeds: list[int]) -> list[Any]:
    """Each request's candidates for `Engine.sample`: its kept rows forced, candidate j with seed + j."""
    import numpy as np

    positions = np.arange(GRID_SIDE * GRID_SIDE)
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
                forced_mask=positions < r.kept_rows * GRID_SIDE,
            )
        )
    return out


def variation_canvas(strength: str) -> Any:
    """The rows a variation redraws, as a canvas of the 16 × 16 grid (for the decode window and the feather)."""
    import numpy as np

    changed = np.zeros((GRID_SIDE, GRID_SIDE), bool)
    changed[STRENGTHS[strength] :] = True
    return kept_canvas(changed, 'vary', strength)


def ranking_scores(clip: Any, pixels: Any, prompt: str, negative: str = '') -> tuple[np.ndarray, np.ndarray]:
    """The two parts of a variation's score, from one pass of CLIP's image tower over (B + 1, 3, H, W) pixels, the
    B candidates then the pick: (B,) 100 · cos(picture, prompt), minus 100 · cos(picture, negative) where there is
    a negative (as `Engine.rank` scores an imagine), and (B,) 100 · cos(picture, pick), how close each stays."""
    import torch

    with torch.inference_mode():
        embeddings = clip.encode_images(pixels)  # (B + 1, D), L2-normalised
        texts = clip.encode_text([prompt, negative] if negative.strip() else [prompt])  # (1 or 2, D)
    candidates, pick = embeddings[:-1], embeddings[-1:]
    cosines = 100.0 * (candidates @ texts.T)  # (B, 1 or 2)
    prompt_scores = cosines[:, 0] - cosines[:, 1] if negative.strip() else cosines[:, 0]
    similarities = 100.0 * (candidates @ pick.T)[:, 0]
    return prompt_scores.float().cpu().numpy(), similarities.float().cpu().numpy()


def write_vary_result(result: VaryResult, directory: Any, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The files an imagine writes (ranked PNGs, the numbered grid, manifest.json), as a manifest of kind 'vary'."""
    ranking = {
        'prompt_scores': [round(s, 4) for s in result.prompt_scores],
        'similarities': [round(s, 4) for s in result.similarities],
        'similarity_weight': SIMILARITY_WEIGHT,
    }
    fields = {'kind': 'vary', 'strength': result.strength, 'kept_rows': result.kept_rows, 'ranking': ranking}
    return write_result(result, directory, extra={**fields, **(extra or {})})


class Vary(Operation):
    name = 'vary'
    title = 'vary'
    bucket = 'daily_imagines'
    compute = 'sampling'
    discord = 'bot.cogs.vary'
    takes_picture = True
    batchable = True
    text_fields = ('prompt',)

    def check(self, payload: Mapping[str, Any], limits: Limits) -> None:
        check_strength(payload.get('strength'))
        check_square(payload.get('width'), payload.get('height'), 'vary')
        n = 9 if payload.get('n') is None else payload.get('n')
        if not isinstance(n, int) or not 1 <= n <= MAX_CANDIDATES:
            raise RequestError(f'The number of variations must be between 1 and {MAX_CANDIDATES} (got {n}).')
        if n > limits.candidates_per_imagine:
            raise RequestTooLarge('candidates per imagine', limits.candidates_per_imagine)
        prompt, seed = payload.get('prompt'), payload.get('seed')
        if prompt is not None and (not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS):
            raise RequestError(f'The prompt must be text of at most {MAX_PROMPT_CHARS} characters.')
        if seed is not None and (not isinstance(seed, int) or not 0 <= seed <= MAX_SEED - MAX_CANDIDATES):
            raise RequestError(f'The seed must be a whole number from 0 to {MAX_SEED - MAX_CANDIDATES} (got {seed}).')

    def fit(self, payload: Mapping[str, Any], limits: Limits) -> Mapping[str, Any]:
        n = int(payload.get('n') or 9)
        return payload if n <= limits.candidates_per_imagine else {**payload, 'n': limits.candidates_per_imagine}

    def compat_key(self, payload: Mapping[str, Any]) -> str:
        """Variations batch when they keep as many rows (the forced prefix is filled once for the call's shortest,
        and sets which decode programs run) and draw as many candidates (the row bucket)."""
        rows = STRENGTHS.get(str(payload.get('strength')), 0)
        return f'{self.name}:{payload.get("preset", "mini")}:{rows}:{payload.get("n") or 9}'

    def compat_prefix(self, preset: str) -> str:
        return f'{self.name}:{preset}:'

    def label(self, payload: Mapping[str, Any]) -> str:
        return f'vary ({payload.get("strength") or "subtle"})'

    def warm_up(self, engine: Any) -> None:
        engine.code_colours()  # previews of grids being sampled

    def run(self, engine: Any, items: Sequence[WorkItem], ctx: RunContext) -> list[Outcome]:
        """One sampling call for the batch; a bad item (its picture gone, no prompt) fails alone."""
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
            job_ids = [items[position].job.id for position in positions]

            def progress(stage: str, done: int, total: int, preview: Any = None) -> None:
                if isinstance(preview, dict):  # request index → that job's grid as it forms
                    preview = {job_ids[index]: picture for index, picture in preview.items()}
                ctx.progress(stage, done, total, preview)

            for position, result in zip(positions, vary(engine, requests, progress, previews=True), strict=True):
                outcomes[position] = result_summary(result, items[position])
        assert all(outcome is not None for outcome in outcomes)
        return outcomes  # type: ignore[return-value]

    def _request(self, engine: Any, item: WorkItem) -> VaryRequest | RunFailed:
        source = load_source(item, gone=GONE, upload_gone=UPLOAD_GONE)
        if isinstance(source, RunFailed):
            return source
        payload = item.job.payload
        picture, image = source.picture, source.image
        if image.size != (PICTURE_SIDE, PICTURE_SIDE):
            return RunFailed(f'I can vary only 256×256 pictures; this one is {image.width}×{image.height}.')
        knobs = knobs_of(picture)
        request = VaryRequest(
            tokens=tokens_of(engine, picture, image),
            image=image,
            prompt=str(payload.get('prompt') or source.prompt),
            strength=str(payload.get('strength')),
            n=int(payload.get('n') or 9),
            seed=payload.get('seed'),
            knobs=knobs,
        )
        try:
            validate(request)
        except RequestError as exc:
            return RunFailed(str(exc))
        return request


def result_summary(result: VaryResult, item: WorkItem) -> dict[str, Any]:
    """Write the files into the item's folder; the job row's summary names them (relative to the data dir)."""
    from edalle.outputs import MANIFEST_NAME

    folder, job = item.folder, item.job
    manifest = write_vary_result(result, folder.path, extra={'job_id': job.id})
    pictures = [
        Picture(
            index=entry['rank'] - 1,
            path=folder.rel(entry['file']),
            width=PICTURE_SIDE,
            height=PICTURE_SIDE,
            tokens=entry['tokens'],
            score=entry['score'],
            seed=entry['seed'],
            knobs=result.knobs.to_json(),
        )
        for entry in manifest['candidates']
    ]
    return {
        'prompt': result.prompt,
        'normalized_prompt': result.normalized_prompt,
        'truncated': result.truncated,
        'seed': result.seed,
        'strength': result.strength,
        'kept_rows': result.kept_rows,
        'ranking': manifest['ranking'],
        'grid': folder.rel(manifest['grid']),
        'manifest': folder.rel(MANIFEST_NAME),
        'pictures': [p.to_json() for p in pictures],
        'timings': manifest['timings'],
        'parent_job_id': job.parent_job_id,
        'parent_index': job.parent_index,
    }


OPERATION = Vary()


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
    strength: str = 'subtle',
    prompt: str | None = None,
    n: int = 9,
    seed: int | None = None,
    preset: str = 'mini',
    request_key: str | None = None,
    priority: int = 0,
    admin: bool = False,
) -> JobRequest:
    """Vary picture `parent_index` of job `parent_job_id` (`width` × `height`, checked: 256 × 256): keep its top rows
    (`strength`), redraw the rest with `prompt` (default: the picture's own) and its knobs; `n` ranked candidates."""
    payload = {
        'strength': strength,
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
