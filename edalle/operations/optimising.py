"""What every optimising operation shares (expand, zoom, pan, square, dream): a canvas, its limits, one run, a time-lapse.

Each of them is a canvas of the expander (`edalle.expander.canvas`) built from the request and the source
picture's size, and one run of VQGAN + CLIP on it (`Engine.run_canvas`). So they share:

- the request's common fields: `steps` (the admins' `expand_steps` is both the most one job may ask for and
  what the bot asks for), `seed`, `max_canvas_px` (the longest side the result may have: the admins'
  `max_canvas_px`, filled in by `fit` at admission), and the source picture's `width` and `height`, which
  the bot reads from the parent's result (or the stored upload) so the canvas can be checked before
  anything is queued or charged (`CanvasOperation.check`);
- the run (`CanvasOperation.run`): the source picture is loaded, the canvas built again from its real size
  with the request's limit, the expander run with a time-lapse frame every few steps (`record_every`),
  the picture saved, and the frames written next to it as an animation under Discord's default upload
  limit (`write_timelapse_file`), which the result names in `media`. The worker publishes the whole run
  folder to the result store, so the bot on another host reads the time-lapse as it reads the picture;
- the estimate of the run's length shown before the job is queued (`CanvasOperation.estimate_seconds`,
  `edalle.expander.cost`: measured on a CPU, torch-free, so the bot can compute it).

A subclass says which canvas its request makes (`canvas`) and how it reads (`label`). This module and the
expander's canvas and cost modules need no torch; the run imports the models only on the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from edalle.errors import RequestTooLarge, RunFailed
from edalle.operations.base import (
    TIMELAPSE,
    Cancelled,
    Operation,
    Outcome,
    Picture,
    RequestError,
    RunContext,
    SourcePicture,
    WorkItem,
    load_source,
)

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from edalle.expander.canvas import Canvas
    from edalle.jobs.limits import Limits
    from edalle.outputs import RunFolder

log = logging.getLogger(__name__)

MAX_CANVAS_PX = 1024  # what a request without `max_canvas_px` may make (`expander.canvas.MAX_CANVAS_PX`)
DEFAULT_STEPS = 100  # what a request without `steps` runs (`expander.default.DefaultSettings.steps`)
MAX_SEED = 2**31 - 1
TIMELAPSE_NAME = TIMELAPSE  # + the animation's extension, in the run folder
TIMELAPSE_LIMIT_BYTES = 10 * 2**20  # Discord's upload limit for bots on a server without boosts (10 MiB)
TIMELAPSE_FORMATS = ('gif',)  # every Discord client animates a GIF attachment (see `edalle.media`)
TOO_BIG_FOR_WORKER = (
    'This picture is too large for the worker that took it (it ran out of memory). Ask for a smaller one, '
    'or ask an admin to lower `max_canvas_px`.'
)


def record_every(steps: int) -> int:
    """k, the steps between two time-lapse frames (`media.frame_interval`): ⌈steps / k⌉ + 1 frames, 51 to 68 for a run
    of 100–200 steps. A frame reuses the picture the step already decoded, shrunk on the device (`expander.frames`):
    measured at a few thousandths of a per cent of a step (bench/RESULTS.md, canvas operations)."""
    from edalle.media import frame_interval

    return frame_interval(steps)


def canvas_limit(payload: Mapping[str, Any]) -> int:
    """The longest side a request's result may have: its `max_canvas_px`, or the default limit."""
    return int(payload.get('max_canvas_px') or MAX_CANVAS_PX)


def source_size(payload: Mapping[str, Any]) -> tuple[int, int] | None:
    """The source picture's (width, height) a request carries, or None when it carries none."""
    width, height = payload.get('width'), payload.get('height')
    if isinstance(width, int) and isinstance(height, int) and not isinstance(width, bool) and width > 0 and height > 0:
        return (width, height)
    return None


def write_timelapse_file(
    folder: RunFolder, frames: Sequence[np.ndarray], limit_bytes: int = TIMELAPSE_LIMIT_BYTES
) -> str | None:
    """Encode `frames` (oldest first, the final picture last) into the run folder as an animation under `limit_bytes`;
    its path relative to the data dir, or None when there is nothing to animate (fewer than two frames) or it cannot
    be made small enough. The bot fits it again to a server with a lower limit (`bot.utils.images.load_upload`)."""
    from edalle.media import MediaTooLarge, write_timelapse
    from edalle.outputs import write_atomic

    if len(frames) < 2:
        return None
    try:
        animation = write_timelapse(frames, limit_bytes, formats=TIMELAPSE_FORMATS)
    except MediaTooLarge as exc:  # a courtesy beside the picture: the job still succeeds without it
        log.warning('no time-lapse for %s: %s', folder.relative, exc)
        return None
    path = folder.file(TIMELAPSE_NAME + animation.extension)
    write_atomic(path, animation.data)
    return folder.rel(path)


@dataclass(frozen=True)
class CanvasStart:
    """What one run starts from: the canvas, the source (None for a dream from a prompt), the texts, how to start."""

    canvas: Canvas
    image: Image.Image | None
    tokens: np.ndarray | None
    prompt: str
    negative_prompt: str = ''
    init: str = 'auto'


class CanvasOperation(Operation):
    """An operation that is one canvas of the expander; subclasses build their canvas and name their files."""

    bucket = 'daily_edits'
    compute = 'optimising'
    takes_picture = True
    steps_noun: ClassVar[str] = 'optimisation steps'  # "at most 50 optimisation steps here"
    filename: ClassVar[str] = 'picture.png'  # the result's picture in the run folder
    gone: ClassVar[str] = 'The picture to start from is gone. Pick it again.'
    upload_gone: ClassVar[str] = 'The image to start from is gone. Attach it again.'

    # ---- the request --------------------------------------------------------------------------------

    def canvas(self, payload: Mapping[str, Any], size: tuple[int, int] | None, max_canvas_px: int) -> Canvas:
        """The canvas this request makes from a source of `size` (width, height) px, raising `ExpandError`
        (`CanvasError`) worded for a member, e.g. past `max_canvas_px` naming the largest allowed."""
        raise NotImplementedError

    def check(self, payload: Mapping[str, Any], limits: Limits) -> None:
        from edalle.expander.errors import ExpandError

        steps = payload.get('steps')
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
            most = limits.expand_steps
            raise RequestError(f'The number of steps must be a whole number from 1 to {most} (got {steps!r}).')
        if (steps or 0) > limits.expand_steps:
            raise RequestTooLarge(self.steps_noun, limits.expand_steps)
        seed = payload.get('seed')
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED):
            raise RequestError(f'The seed must be a whole number from 0 to {MAX_SEED} (got {seed!r}).')
        limit = canvas_limit(payload)
        if limit > limits.max_canvas_px:
            raise RequestTooLarge('px on the longest side of a picture', limits.max_canvas_px)
        try:
            self.canvas(payload, source_size(payload), limit)
        except ExpandError as exc:
            raise RequestError(str(exc)) from None

    def fit(self, payload: Mapping[str, Any], limits: Limits) -> Mapping[str, Any]:
        """The limit a request may make filled in (or lowered) to this member's: the runner builds its canvas with it."""
        asked = payload.get('max_canvas_px')
        limit = limits.max_canvas_px if asked is None else min(int(asked), limits.max_canvas_px)
        return payload if asked == limit else {**payload, 'max_canvas_px': limit}

    def estimate_seconds(self, payload: Mapping[str, Any]) -> float | None:
        """How long the run takes on a CPU worker (`edalle.expander.cost`), or None when the request cannot tell."""
        from edalle.expander.cost import estimate_run_seconds
        from edalle.expander.errors import ExpandError

        try:
            canvas = self.canvas(payload, source_size(payload), canvas_limit(payload))
        except (ExpandError, ValueError, TypeError):
            return None
        return estimate_run_seconds(canvas, int(payload.get('steps') or DEFAULT_STEPS))

    # ---- the worker side ----------------------------------------------------------------------------

    def run(self, engine: Any, items: Sequence[WorkItem], ctx: RunContext) -> list[Outcome]:
        return [self.run_one(engine, item, ctx) for item in items]

    def run_one(self, engine: Any, item: WorkItem, ctx: RunContext) -> Outcome:
        start = self.start(item)
        if isinstance(start, RunFailed):
            return start
        return run_canvas_job(engine, item, ctx, start, self.filename)

    def start(self, item: WorkItem) -> CanvasStart | RunFailed:
        """The canvas and source of one claimed job: its picture loaded, the canvas built from its real size."""
        from edalle.expander.errors import ExpandError

        payload = item.job.payload or {}
        source = load_source(item, gone=self.gone, upload_gone=self.upload_gone)
        if isinstance(source, RunFailed):
            return source
        image, tokens = source_pixels(source, canvas_limit(payload))
        try:
            canvas = self.canvas(payload, image.size, canvas_limit(payload))
        except ExpandError as exc:
            return RunFailed(str(exc))
        prompt = str(payload.get('prompt') or source.prompt)
        return CanvasStart(canvas, image, tokens, prompt, str(payload.get('negative_prompt') or ''))


def source_pixels(source: SourcePicture, max_canvas_px: int) -> tuple[Image.Image, np.ndarray | None]:
    """The source's pixels in whole 16-px tokens, and its token grid where it has one that matches them.

    Every picture the operations make is in whole tokens already; anything else (a file from elsewhere) is
    fitted keeping its shape (`sources.fit_picture`), and then its tokens no longer apply."""
    import numpy as np

    from edalle.expander.sources import TOKEN_PX, fit_picture

    image = source.image
    tokens = source.picture.tokens if source.picture is not None else None
    grid = np.asarray(tokens, dtype=np.int64) if tokens else None
    if image.width % TOKEN_PX or image.height % TOKEN_PX:
        return fit_picture(image, max_long_px=max_canvas_px), None
    if grid is not None and grid.shape != (image.height // TOKEN_PX, image.width // TOKEN_PX):
        grid = None
    return image, grid


def run_canvas_job(engine: Any, item: WorkItem, ctx: RunContext, start: CanvasStart, filename: str) -> Outcome:
    """One run on the worker's engine: the picture saved as `filename`, the time-lapse beside it, the result summary.

    The expander's refusals (a bad ratio, a dream without a prompt) fail the job with their words; running out of
    memory on this worker's device fails it with `TOO_BIG_FOR_WORKER` (a retry would run out again)."""
    from edalle.expander.api import CanvasRequest
    from edalle.expander.errors import ExpandCancelled, ExpandError
    from edalle.outputs import save_png

    job, payload = item.job, item.job.payload or {}
    steps = payload.get('steps')
    request = CanvasRequest(
        canvas=start.canvas,
        source_image=start.image,
        source_tokens=start.tokens,
        prompt=start.prompt,
        negative_prompt=start.negative_prompt,
        steps=steps,
        seed=payload.get('seed'),
        init=start.init,
        record_every=record_every(steps or DEFAULT_STEPS),
    )
    ctx.check_cancel()
    try:
        result = engine.run_canvas(request, progress=ctx.progress, should_cancel=ctx.should_cancel)
    except ExpandCancelled:
        raise Cancelled() from None
    except ExpandError as exc:  # worded for members: a bad ratio, a canvas past the limit, no prompt for a dream
        return RunFailed(str(exc))
    except Exception as exc:
        if not out_of_memory(exc):
            raise
        release_device_memory()
        log.warning('job %s: out of memory on a %s canvas', job.id, 'x'.join(map(str, start.canvas.size)))
        return RunFailed(TOO_BIG_FOR_WORKER)
    path = item.folder.file(filename)
    save_png(result.image, path)
    picture = Picture(0, item.folder.rel(path), result.width, result.height, seed=result.seed)
    summary: dict[str, Any] = {
        'pictures': [picture.to_json()],
        'settings': result.settings,
        'seed': result.seed,
        'prompt': start.prompt,
        'parent_job_id': job.parent_job_id,
        'parent_index': job.parent_index,
        'source_path': payload.get('source_path'),
    }
    if start.negative_prompt:
        summary['negative_prompt'] = start.negative_prompt
    timelapse = write_timelapse_file(item.folder, [frame.image for frame in result.frames])
    if timelapse is not None:
        summary['media'] = {TIMELAPSE: timelapse}
    return summary


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says the device (or the host) ran out of memory."""
    if isinstance(exc, MemoryError):
        return True
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)


def release_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
