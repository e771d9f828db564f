"""imagine: a prompt → N DALL·E mini candidates, ranked best-first by CLIP (the 3 × 3 grid).

The request is a prompt, the number of candidates and a seed; jobs of one preset and one candidate count
share a compat key, so the worker samples them as one batch (one compiled call). The engine draws them
(`Engine.imagine`); this module says what a request may be, and what its result looks like: the ranked
pictures with their 16 × 16 token grids (so a pick can be redrawn, varied or widened exactly), the
numbered grid and a manifest, the same files the CLI writes (`write_result`).
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class ImagineRequest:
    prompt: str
    n: int = 9
    seed: int | None = None  # None: a random seed, recorded in the result


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


def validate(request: ImagineRequest) -> None:
    """Refuse what the engine cannot draw, in words for the member (raises `RequestError`)."""
    if not request.prompt or not request.prompt.strip():
        raise RequestError('The prompt is empty: describe the picture, e.g. `a lighthouse in a storm, oil painting`.')
    if not 1 <= request.n <= MAX_CANDIDATES:
        raise RequestError(f'The number of candidates must be between 1 and {MAX_CANDIDATES} (got {request.n}).')
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED - MAX_CANDIDATES:
        raise RequestError(f'The seed must be a whole number from 0 to {MAX_SEED - MAX_CANDIDATES} (got {request.seed}).')


def request_of(payload: Mapping[str, Any]) -> ImagineRequest:
    n = payload.get('n')
    return ImagineRequest(prompt=str(payload.get('prompt') or ''), n=9 if n is None else int(n), seed=payload.get('seed'))


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

    def check(self, payload: Mapping[str, Any], limits: Limits) -> None:
        if int(payload.get('n') or 1) > limits.candidates_per_imagine:
            raise RequestTooLarge('candidates per imagine', limits.candidates_per_imagine)
        validate(request_of(payload))

    def fit(self, payload: Mapping[str, Any], limits: Limits) -> Mapping[str, Any]:
        n = int(payload.get('n') or 9)
        return payload if n <= limits.candidates_per_imagine else {**payload, 'n': limits.candidates_per_imagine}

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
            results = engine.imagine(requests, progress=ctx.progress)
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
    request_key: str | None = None,
    priority: int = 0,
) -> JobRequest:
    """An imagine job: `n` candidates for `prompt`; submit it with `JobStore.enqueue`."""
    payload = {'prompt': prompt, 'n': n, 'seed': seed, 'preset': preset}
    return OPERATION.build(
        payload, user_id=user_id, guild_id=guild_id, channel_id=channel_id, request_key=request_key, priority=priority
    )
