"""repaint_clip: redraw a region of any picture by the E-DALL-E method (CLIP-guided VQGAN latents).

The region's latents alone are optimised (`edalle.expander`, a 'repaint' canvas from `canvas_for_region`):
starting from the picture's own latents ('edit', the default) or from a blurred fill of what surrounds
the region ('remove'), guided by CLIP towards the prompt, with a seam term on a band around the region and
a feathered composite at its edge. Every latent outside the region stays the picture's, and every pixel
beyond the region's one-token feather band is the picture's, bit for bit. It works on pictures of any size
(a widened one included); a candidate's exact token grid is used where it has one.

The slow, optimising twin of `repaint` (by tokens): it counts against `daily_edits`, and the admins'
`expand_steps` caps its steps as it caps an expand's. The bot offers both behind one command
(`.repaint … --method clip`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edalle.errors import RequestTooLarge, RunFailed
from edalle.operations.base import (
    Operation,
    Outcome,
    RequestError,
    RunContext,
    Source,
    WorkItem,
    load_source,
)
from edalle.operations.optimising import CanvasStart, canvas_limit, run_canvas_job, source_pixels
from edalle.operations.repaint import GONE, UPLOAD_GONE, check_prompt

if TYPE_CHECKING:
    from edalle.jobs.limits import Limits
    from edalle.jobs.store import JobRequest

INITS = ('edit', 'remove')  # from the region's own latents, or from a blur of what surrounds it


def check_region(region: str, width: object, height: object) -> None:
    """Refuse a region that does not parse on a `width` × `height` picture's grid or covers all or nothing, and a
    picture larger than the expander's canvas limit (an upscaled one)."""
    from edalle.expander.canvas import MAX_CANVAS_PX, canvas_for_region
    from edalle.expander.errors import ExpandError

    if not isinstance(width, int) or not isinstance(height, int):
        raise RequestError('Say which picture to repaint: its size is missing.')
    if max(width, height) > MAX_CANVAS_PX:
        raise RequestError(f'This picture is {width}×{height}; I repaint pictures of up to {MAX_CANVAS_PX} px a side.')
    try:
        canvas_for_region((width, height), region)
    except ExpandError as exc:
        raise RequestError(str(exc)) from None


class RepaintClip(Operation):
    name = 'repaint_clip'
    title = 'repaint (CLIP)'
    bucket = 'daily_edits'
    compute = 'optimising'
    discord = 'bot.cogs.repaint'
    takes_picture = True
    text_fields = ('prompt',)

    def check(self, payload: Mapping[str, Any], limits: Limits) -> None:
        check_prompt(payload.get('prompt'))
        check_region(str(payload.get('region') or ''), payload.get('width'), payload.get('height'))
        if (payload.get('init') or 'edit') not in INITS:
            init = payload.get('init')
            raise RequestError(
                f'Start a repaint from the picture (edit) or a blur of its surroundings (remove), not {init!r}.'
            )
        steps = payload.get('steps')
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise RequestError(f'The number of steps must be a whole number of at least 1 (got {steps}).')
        if (steps or 0) > limits.expand_steps:
            raise RequestTooLarge('optimisation steps', limits.expand_steps)

    def label(self, payload: Mapping[str, Any]) -> str:
        return f'repaint {str(payload.get("region") or "").strip().upper()} (CLIP)'

    def run(self, engine: Any, items: Sequence[WorkItem], ctx: RunContext) -> list[Outcome]:
        return [self._one(engine, item, ctx) for item in items]

    def _one(self, engine: Any, item: WorkItem, ctx: RunContext) -> Outcome:
        """One run on the expander's region canvas, as every optimising operation runs (`run_canvas_job`: the
        time-lapse, out-of-memory and cancelling alike)."""
        from edalle.expander.canvas import canvas_for_region
        from edalle.expander.errors import ExpandError

        source = load_source(item, gone=GONE, upload_gone=UPLOAD_GONE)
        if isinstance(source, RunFailed):
            return source
        payload = item.job.payload or {}
        image, tokens = source_pixels(source, canvas_limit(payload))  # a candidate's exact token grid where it has one
        try:
            canvas = canvas_for_region(image.size, str(payload.get('region') or ''))
        except ExpandError as exc:  # a region off this picture …: worded for members
            return RunFailed(str(exc))
        start = CanvasStart(canvas, image, tokens, str(payload.get('prompt') or ''), init=str(payload.get('init') or 'edit'))
        outcome = run_canvas_job(engine, item, ctx, start, 'repainted.png')
        if isinstance(outcome, dict):
            outcome.update(method='clip', region=canvas.label)
        return outcome


OPERATION = RepaintClip()


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
    steps: int | None = None,
    seed: int | None = None,
    init: str = 'edit',
    preset: str = 'mini',
    request_key: str | None = None,
    priority: int = 0,
    admin: bool = False,
) -> JobRequest:
    """Repaint `region` of picture `parent_index` of job `parent_job_id` (`width` × `height`, any size) with CLIP
    guidance towards `prompt`, in `steps` (default the method's; capped by the admins' `expand_steps`)."""
    payload = {
        'region': region.strip().upper(),
        'prompt': prompt,
        'steps': steps,
        'seed': seed,
        'init': init,
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
