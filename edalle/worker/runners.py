"""The seam between the queue and the engine: one runner per job kind.

A runner turns claimed jobs into result summaries. It runs on the worker's job thread (the engine
blocks), reports progress through `RunContext.progress`, and checks `RunContext.check_cancel()` between
steps. It returns one outcome per item: a result dict (paths relative to the data dir) or a `RunFailed`
whose message the user will read. Any other exception means "something broke": the worker logs it and
the job is retried while attempts are left.

This is the only module that imports the engine, and only when an imagine or expand runner is built,
so a worker serving other kinds (the tests' runners) never loads jax or torch.

Adding kinds (the hook tests use): a module named with `--runner-module` (or in `$EDALLE_RUNNER_MODULES`,
comma-separated) is imported and its `RUNNERS: dict[str, RunnerFactory]` is added to the table; then
`--kinds` picks which kinds this worker serves.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edalle.errors import RunFailed
from edalle.jobs import EXPAND, IMAGINE, Job
from edalle.jobs.store import UPLOADS_DIR
from edalle.worker.results import RunFolder

if TYPE_CHECKING:
    from PIL import Image


class Cancelled(Exception):
    """Raised inside a runner when the worker asks it to stop: a cancel, or a shutdown handing jobs back."""


@dataclass(frozen=True)
class WorkItem:
    job: Job
    folder: RunFolder  # where this attempt writes its files
    parent: Job | None = None  # expand: the imagine job it starts from


class RunContext(Protocol):
    def progress(self, stage: str, done: int, total: int, preview: Image.Image | None = None) -> None: ...
    def should_cancel(self) -> bool: ...
    def check_cancel(self) -> None: ...  # raises Cancelled


Outcome = dict[str, Any] | RunFailed


class Runner(Protocol):
    kind: str
    batchable: bool  # several jobs with one compat key may run as one call
    compat_prefix: str  # the compat keys it serves, e.g. 'imagine:mini:'

    def run(self, items: Sequence[WorkItem], ctx: RunContext) -> list[Outcome]: ...


@dataclass(frozen=True)
class RunnerConfig:
    preset: str
    data_dir: Path
    device: str | None = None
    dtype: str | None = None


RunnerFactory = Callable[[RunnerConfig], Runner]


@functools.cache
def load_engine(preset: str, data_dir: Path, device: str | None, dtype: str | None) -> Any:
    """Load the models once per process, shared by the imagine and expand runners."""
    from edalle.engine import Engine

    return Engine.load(preset, data_dir, device=device, dtype=dtype)


class ImagineRunner:
    """DALL·E mini candidates ranked by CLIP; a batch of prompts is one engine call."""

    kind = IMAGINE
    batchable = True

    def __init__(self, config: RunnerConfig) -> None:
        self.compat_prefix = f'{IMAGINE}:{config.preset}:'
        self.engine = load_engine(config.preset, config.data_dir, config.device, config.dtype)

    def run(self, items: Sequence[WorkItem], ctx: RunContext) -> list[Outcome]:
        from edalle.engine import ImagineRequest, RequestError, validate_imagine
        from edalle.outputs import write_imagine_result

        outcomes: list[Outcome | None] = [None] * len(items)
        requests, positions = [], []
        for position, item in enumerate(items):
            payload = item.job.payload
            request = ImagineRequest(prompt=str(payload['prompt']), n=int(payload.get('n') or 9), seed=payload.get('seed'))
            try:
                validate_imagine(request)
            except RequestError as exc:  # one bad request fails alone, not its whole batch
                outcomes[position] = RunFailed(str(exc))
                continue
            requests.append(request)
            positions.append(position)
        if requests:
            ctx.check_cancel()
            results = self.engine.imagine(requests, progress=ctx.progress)
            for position, result in zip(positions, results, strict=True):
                folder = items[position].folder
                manifest = write_imagine_result(result, folder.path, extra={'job_id': items[position].job.id})
                outcomes[position] = {
                    'prompt': result.prompt,
                    'normalized_prompt': result.normalized_prompt,
                    'truncated': result.truncated,
                    'seed': result.seed,
                    'grid': folder.rel(manifest['grid']),
                    'manifest': folder.rel('manifest.json'),
                    'candidates': [
                        {
                            'index': entry['rank'] - 1,  # 0-based, best first
                            'path': folder.rel(entry['file']),
                            'tokens': entry['tokens'],  # 16 × 16 VQGAN codes
                            'score': entry['score'],
                            'seed': entry['seed'],
                        }
                        for entry in manifest['candidates']
                    ],
                    'timings': manifest['timings'],
                }
        assert all(outcome is not None for outcome in outcomes)
        return outcomes  # type: ignore[return-value]


class ExpandRunner:
    """E-DALL-E: widen one candidate of a finished imagine job, or a member's uploaded picture, to another ratio."""

    kind = EXPAND
    batchable = False

    def __init__(self, config: RunnerConfig) -> None:
        self.compat_prefix = f'{EXPAND}:{config.preset}'
        self.data_dir = config.data_dir
        self.engine = load_engine(config.preset, config.data_dir, config.device, config.dtype)

    def run(self, items: Sequence[WorkItem], ctx: RunContext) -> list[Outcome]:
        return [self._one(item, ctx) for item in items]

    def _one(self, item: WorkItem, ctx: RunContext) -> Outcome:
        import numpy as np
        from PIL import Image

        job, parent = item.job, item.parent
        if (job.payload or {}).get('source_path'):
            upload = self._upload(job)
            return (
                upload
                if isinstance(upload, RunFailed)
                else self._expand(item, ctx, upload, None, job.payload.get('prompt') or '')
            )
        candidate = (
            next(
                (c for c in ((parent.result or {}).get('candidates') or []) if c.get('index') == job.parent_index),
                None,
            )
            if parent
            else None
        )
        if candidate is None:
            return RunFailed('The picture to expand is gone. Run the imagine again and pick a new one.')
        try:
            with Image.open(self.data_dir / candidate['path']) as opened:
                source = opened.convert('RGB')
        except OSError:
            return RunFailed('The picture to expand is gone. Run the imagine again and pick a new one.')
        prompt = job.payload.get('prompt') or (parent.payload or {}).get('prompt') or ''
        tokens = np.asarray(candidate['tokens'], dtype=np.int32) if candidate.get('tokens') else None
        return self._expand(item, ctx, source, tokens, prompt)

    def _upload(self, job: Job) -> Image.Image | RunFailed:
        """A member's picture, stored by the bot as a checked 256×256 PNG under `uploads/` (fetched from the result
        store before the run). It has no tokens (the VQGAN encodes it) and no prompt of its own (empty: the
        picture alone guides)."""
        from PIL import Image

        from edalle.expander.sources import fit_square

        path = (self.data_dir / str(job.payload['source_path'])).resolve()
        gone = RunFailed('The image to expand is gone. Attach it again with `.expand`.')
        if not path.is_relative_to((self.data_dir / UPLOADS_DIR).resolve()):
            return gone  # the store checks the path; this keeps a bad row from reading outside the data dir
        try:
            with Image.open(path) as opened:
                source = fit_square(opened)  # already 256×256 RGB from the bot: a no-op then
        except OSError:
            return gone
        return source

    def _expand(self, item: WorkItem, ctx: RunContext, source: Image.Image, tokens: Any, prompt: str) -> Outcome:
        from edalle.expander.api import ExpandRequest
        from edalle.expander.errors import ExpandCancelled
        from edalle.outputs import save_png

        job, payload = item.job, item.job.payload
        request = ExpandRequest(
            source_tokens=tokens,
            source_image=source,
            prompt=prompt,
            ratio=payload.get('ratio') or '16:9',
            steps=payload.get('steps'),
            seed=payload.get('seed'),
        )
        ctx.check_cancel()
        try:
            result = self.engine.expand(request, progress=ctx.progress, should_cancel=ctx.should_cancel)
        except ExpandCancelled:
            raise Cancelled() from None
        except ValueError as exc:  # the expander's refusals (ExpandError: a bad ratio …) are worded for users
            return RunFailed(str(exc))
        path = item.folder.file('expanded.png')
        save_png(result.image, path)
        return {
            'path': item.folder.rel(path),
            'width': result.width,
            'height': result.height,
            'settings': result.settings,
            'seed': result.seed,
            'prompt': prompt,
            'parent_job_id': job.parent_job_id,
            'parent_index': job.parent_index,
            'source_path': payload.get('source_path'),
        }


RUNNER_FACTORIES: dict[str, RunnerFactory] = {IMAGINE: ImagineRunner, EXPAND: ExpandRunner}


def load_runner_modules(names: Sequence[str]) -> dict[str, RunnerFactory]:
    """The runner table: the built-in kinds plus each named module's `RUNNERS`."""
    table = dict(RUNNER_FACTORIES)
    env_names = [n.strip() for n in os.environ.get('EDALLE_RUNNER_MODULES', '').split(',') if n.strip()]
    for name in [*env_names, *names]:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f'cannot import the runner module {name!r}: {exc}') from exc
        table.update(module.RUNNERS)
    return table


def build_runners(kinds: Sequence[str], config: RunnerConfig, modules: Sequence[str] = ()) -> dict[str, Runner]:
    """Build the runners for `kinds` (this loads the models, once)."""
    table = load_runner_modules(modules)
    unknown = [kind for kind in kinds if kind not in table]
    if unknown:
        raise ValueError(f'unknown job kind(s) {", ".join(unknown)}; known: {", ".join(sorted(table))}')
    return {kind: table[kind](config) for kind in kinds}
