"""imagine: a prompt → N DALL·E mini candidates, ranked best-first by CLIP (the 3 × 3 grid).

The request is a prompt, the number of candidates and a seed; jobs of one preset and one candidate count
share a compat key, so the worker samples them as one batch (one compiled call). The engine draws them
(`Engine.imagine`); this module says what a request may be, and what its result looks like: the ranked
pictures with their 16 × 16 token grids (so a pick can be redrawn, varied or widened exactly), the
numbered grid and a manifest, the same files the CLI writes (`write_result`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edalle.errors import RequestTooLarge, RunFailed
from edalle.operations.base import PICTURE_SIDE, Operation, Outcome, Picture, RequestError, RunContext, WorkItem
from edalle.outputs import MANIFEST_NAME, candidate_filename, manifest_json, save_png, write_atomic

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from edalle.jobs.limits import Limits
    from edalle.jobs.store import JobRequest

MAX_CANDIDATES = 16  # per prompt: a 3×3 grid needs 9; more is a waste of a shared GPU
MAX_SEED = 2**31 - 1  # JAX PRNG seeds are int32-friendly; also what Discord users can type
MANIFEST_VERSION = 1
CODEBOOK_SIZE = 16_384  # the VQGAN's codes: top-k above this keeps every code
MAX_NEGATIVE_CHARS = 200


@dataclass(frozen=True)
class Knobs:
    """How one request samples: the DALL·E mini notebook's knobs, and a negative prompt.

    The defaults are the notebook's (top-k 50, no top-p, temperature 1, condition scale 10). `top_k`
    None keeps every code; `negative` replaces the empty prompt that super-conditioning subtracts
    (`uncond + scale·(cond − uncond)`) and is subtracted from the CLIP score when ranking.
    """

    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float | None = None
    cond_scale: float = 10.0
    negative: str = ''

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in KNOB_NAMES}

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Knobs:
        """The knobs a payload (or a member's saved defaults) sets; the others keep their defaults."""
        given = {name: values[name] for name in KNOB_NAMES if name in values}
        if given.get('negative') is None:
            given.pop('negative', None)
        return cls(**given)

    def is_default(self) -> bool:
        return self == Knobs()


KNOB_NAMES = ('temperature', 'top_k', 'top_p', 'cond_scale', 'negative')
#: each number knob's valid range, as the member reads it
KNOB_RANGES: dict[str, tuple[float, float]] = {
    'temperature': (0.05, 5.0),
    'top_k': (1, CODEBOOK_SIZE),
    'top_p': (0.0, 1.0),  # above 0, at most 1
    'cond_scale': (0.0, 50.0),
}


@dataclass(frozen=True)
class ImagineRequest:
    prompt: str
    n: int = 9
    seed: int | None = None  # None: a random seed, recorded in the result
    knobs: Knobs = Knobs()


@dataclass
class Candidate:
    index: int  # position in the ranking, 0 = best
    image: Image.Image  # 256 × 256 RGB
    tokens: np.ndarray  # (16, 16) int32 VQGAN codes
    score: float  # 100 × cosine(image, prompt) under CLIP
    seed: int  # sampling seed of this candidate alone: `--seed <seed> -n 1` redraws it


@dataclass
class ImagineResult:
    prompt: str
    normalized_prompt: str
    truncated: bool  # the prompt had more than 64 BPE tokens and was cut
    token_count: int
    seed: int
    candidates: list[Candidate]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, shared by the batch
    knobs: Knobs = Knobs()


def validate(request: ImagineRequest) -> None:
    """Refuse what the engine cannot draw, in words for the member (raises `RequestError`)."""
    if not request.prompt or not request.prompt.strip():
        raise RequestError('The prompt is empty: describe the picture, e.g. `a lighthouse in a storm, oil painting`.')
    if not 1 <= request.n <= MAX_CANDIDATES:
        raise RequestError(f'The number of candidates must be between 1 and {MAX_CANDIDATES} (got {request.n}).')
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED - MAX_CANDIDATES:
        raise RequestError(f'The seed must be a whole number from 0 to {MAX_SEED - MAX_CANDIDATES} (got {request.seed}).')
    validate_knobs(request.knobs)


def validate_knobs(knobs: Knobs) -> None:
    """Each knob inside its range, or one short message naming the range (`KNOB_RANGES`)."""
    low, high = KNOB_RANGES['temperature']
    if not _number(knobs.temperature) or not low <= knobs.temperature <= high:
        raise RequestError(f'The temperature must be between {low:g} and {high:g} (got {knobs.temperature}).')
    low, high = KNOB_RANGES['top_k']
    if knobs.top_k is not None and (not _whole(knobs.top_k) or not low <= knobs.top_k <= high):
        raise RequestError(f'top-k must be a whole number from {low:g} to {high:g}, or all (got {knobs.top_k}).')
    if knobs.top_p is not None and (not _number(knobs.top_p) or not 0.0 < knobs.top_p <= 1.0):
        raise RequestError(f'top-p must be above 0 and at most 1 (got {knobs.top_p}).')
    low, high = KNOB_RANGES['cond_scale']
    if not _number(knobs.cond_scale) or not low <= knobs.cond_scale <= high:
        raise RequestError(f'The condition scale must be between {low:g} and {high:g} (got {knobs.cond_scale}).')
    if not isinstance(knobs.negative, str) or len(knobs.negative) > MAX_NEGATIVE_CHARS:
        raise RequestError(f'The negative prompt must be text of at most {MAX_NEGATIVE_CHARS} characters.')


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def request_of(payload: Mapping[str, Any]) -> ImagineRequest:
    n = payload.get('n')
    try:
        knobs = Knobs.of(payload)
    except TypeError:
        raise RequestError('Those sampling settings are not valid.') from None
    return ImagineRequest(str(payload.get('prompt') or ''), 9 if n is None else int(n), payload.get('seed'), knobs)


def write_result(result: ImagineResult, directory: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write one imagine result's files (ranked PNGs, the numbered grid, manifest.json); returns the manifest."""
    from edalle.grid import make_grid

    directory.mkdir(parents=True, exist_ok=True)
    for candidate in result.candidates:
        save_png(candidate.image, directory / candidate_filename(candidate.index + 1))
    save_png(make_grid([c.image for c in result.candidates]), directory / 'grid.png')
    manifest = {
        'version': MANIFEST_VERSION,
        'kind': 'imagine',
        'prompt': result.prompt,
        'normalized_prompt': result.normalized_prompt,
        'truncated': result.truncated,
        'token_count': result.token_count,
        'seed': result.seed,
        'grid': 'grid.png',
        'candidates': [
            {
                'rank': c.index + 1,
                'file': candidate_filename(c.index + 1),
                'seed': c.seed,
                'score': round(c.score, 4),
                'tokens': c.tokens.tolist(),
            }
            for c in result.candidates
        ],
        'knobs': result.knobs.to_json(),
        'timings': {k: round(v, 4) for k, v in result.timings.items()},
        **(extra or {}),
    }
    write_atomic(directory / MANIFEST_NAME, manifest_json(manifest).encode())
    return manifest


class Imagine(Operation):
    name = 'imagine'
    title = 'imagine'
    bucket = 'daily_imagines'
    compute = 'sampling'
    discord = 'bot.cogs.imagine'
    batchable = True
    text_fields = ('prompt', 'negative')

    def check(self, payload: Mapping[str, Any], limits: Limits) -> None:
        if int(payload.get('n') or 1) > limits.candidates_per_imagine:
            raise RequestTooLarge('candidates per imagine', limits.candidates_per_imagine)
        validate(request_of(payload))

    def fit(self, payload: Mapping[str, Any], limits: Limits) -> Mapping[str, Any]:
        n = int(payload.get('n') or 9)
        return payload if n <= limits.candidates_per_imagine else {**payload, 'n': limits.candidates_per_imagine}

    def warm_up(self, engine: Any) -> None:
        engine.code_colours()  # previews of grids being sampled: fitted once, then read from disk

    def compat_key(self, payload: Mapping[str, Any]) -> str:
        return f'{self.name}:{payload.get("preset", "mini")}:{payload.get("n") or 9}'

    def compat_prefix(self, preset: str) -> str:
        return f'{self.name}:{preset}:'

    def run(self, engine: Any, items: Sequence[WorkItem], ctx: RunContext) -> list[Outcome]:
        """A batch of prompts is one engine call; one bad request fails alone, not its whole batch."""
        outcomes: list[Outcome | None] = [None] * len(items)
        requests, positions = [], []
        for position, item in enumerate(items):
            request = request_of(item.job.payload)
            try:
                validate(request)
            except RequestError as exc:
                outcomes[position] = RunFailed(str(exc))
                continue
            requests.append(request)
            positions.append(position)
        if requests:
            ctx.check_cancel()
            job_ids = [items[position].job.id for position in positions]

            def progress(stage: str, done: int, total: int, preview: Any = None) -> None:
                if isinstance(preview, dict):  # request index → that job's grid as it forms
                    preview = {job_ids[index]: picture for index, picture in preview.items()}
                ctx.progress(stage, done, total, preview)

            results = engine.imagine(requests, progress=progress, previews=True)
            for position, result in zip(positions, results, strict=True):
                outcomes[position] = result_summary(result, items[position])
        assert all(outcome is not None for outcome in outcomes)
        return outcomes  # type: ignore[return-value]


def result_summary(result: ImagineResult, item: WorkItem) -> dict[str, Any]:
    """Write the files into the item's folder; the job row's summary names them (relative to the data dir)."""
    folder = item.folder
    manifest = write_result(result, folder.path, extra={'job_id': item.job.id})
    pictures = [
        Picture(
            index=entry['rank'] - 1,  # 0-based, best first
            path=folder.rel(entry['file']),
            width=PICTURE_SIDE,
            height=PICTURE_SIDE,
            tokens=entry['tokens'],  # 16 × 16 VQGAN codes
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
        'grid': folder.rel(manifest['grid']),
        'manifest': folder.rel(MANIFEST_NAME),
        'pictures': [p.to_json() for p in pictures],
        'timings': manifest['timings'],
    }


OPERATION = Imagine()


def request(
    *,
    user_id: int,
    guild_id: int | None,
    channel_id: int | None,
    prompt: str,
    n: int = 9,
    seed: int | None = None,
    preset: str = 'mini',
    knobs: Mapping[str, Any] | None = None,
    request_key: str | None = None,
    priority: int = 0,
) -> JobRequest:
    """An imagine job: `n` candidates for `prompt`, sampled with `knobs` (`Knobs` fields; the others keep their
    defaults); submit it with `JobStore.enqueue`."""
    payload = {'prompt': prompt, 'n': n, 'seed': seed, 'preset': preset}
    payload.update({name: value for name, value in (knobs or {}).items() if name in KNOB_NAMES})
    return OPERATION.build(
        payload, user_id=user_id, guild_id=guild_id, channel_id=channel_id, request_key=request_key, priority=priority
    )


MAX_VARIANTS = 4
_VARIANTS = re.compile(r'\{([^{}]*,[^{}]*)\}')


def prompt_variants(prompt: str) -> list[str]:
    """`a {red, blue} ball` → ['a red ball', 'a blue ball']: one prompt per choice, every `{…, …}` group combined,
    at most `MAX_VARIANTS`; a prompt without such a group is its only variant. Raises `RequestError` with the
    count when there would be more."""
    groups = [[choice.strip() for choice in match.group(1).split(',')] for match in _VARIANTS.finditer(prompt)]
    if not groups:
        return [prompt]
    if any(not choice for group in groups for choice in group):
        raise RequestError('A `{…}` group has an empty choice: write `a {red, blue} ball`.')
    count = math.prod(len(group) for group in groups)
    if count > MAX_VARIANTS:
        raise RequestError(f'That prompt makes {count} variants; at most {MAX_VARIANTS} can be drawn at once.')
    variants = ['']
    pieces = _VARIANTS.split(prompt)  # text, group, text, group, …, text
    for position, piece in enumerate(pieces):
        if position % 2 == 0:
            variants = [v + piece for v in variants]
        else:
            variants = [v + choice.strip() for v in variants for choice in piece.split(',')]
    return [re.sub(r'\s+', ' ', variant).strip() for variant in variants]
