"""dream: VQGAN + CLIP from a prompt alone (every cell of the canvas free), or a picture refined towards a prompt.

A canvas of the expander with no source (`canvas_for_dream`: 256 px on the short side at any ratio from 1:3 to
3:1, up to the admins' `max_canvas_px`), started from random codes, grey or pixel noise (`init`); or, from a
picture (`init='refine'`, `canvas_for_refine`), its own size started from its own latents. Nothing is
composited and there is no seam term; the expander's views, learning-rate schedule and mixed precision are
reused. A negative prompt (`negative_prompt`, `.dream … --no <words>`) pushes the views away from its text with a
bounded term. The result is a picture like any other: it can be zoomed, panned, expanded and upscaled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edalle.errors import RunFailed
from edalle.operations.base import RequestError, Source, WorkItem
from edalle.operations.optimising import CanvasOperation, CanvasStart, canvas_limit

if TYPE_CHECKING:
    from edalle.expander.canvas import Canvas
    from edalle.jobs.limits import Limits
    from edalle.jobs.store import JobRequest

INITS = ('random', 'grey', 'noise')  # how a dream from a prompt alone may start (`expander.canvas.INITS`)
REFINE = 'refine'  # a dream from a picture starts from its latents
DEFAULT_RATIO = '1:1'
NO_PROMPT = 'A dream starts from words: give a prompt, e.g. `.dream a lighthouse in a storm, oil painting`.'


class Dream(CanvasOperation):
    name = 'dream'
    title = 'dream'
    discord = 'bot.cogs.dream'
    picture_optional = True  # from a prompt alone, or refining a picked picture
    text_fields = ('prompt', 'negative_prompt')
    filename = 'dream.png'
    gone = 'The picture to dream from is gone. Pick it again.'
    upload_gone = 'The image to dream from is gone. Attach it again.'

    def takes_source(self, payload: Mapping[str, Any]) -> bool:
        """Whether this request refines a picture (else it dreams from its prompt alone)."""
        return payload.get('init') == REFINE

    def canvas(self, payload: Mapping[str, Any], size: tuple[int, int] | None, max_canvas_px: int) -> Canvas:
        from edalle.expander.canvas import CanvasError, canvas_for_dream, canvas_for_refine

        init = payload.get('init') or 'auto'
        if self.takes_source(payload):
            if payload.get('ratio'):
                raise CanvasError(
                    'A dream from a picture keeps its shape: leave out the ratio (expand or zoom the result afterwards).'
                )
            if size is None:
                raise CanvasError('Say which picture to dream from: its size is missing.')
            canvas = canvas_for_refine(size, max_canvas_px)
        else:
            if init not in ('auto', *INITS):
                raise CanvasError(f'{init!r} is not a way to start a dream; choose one of: {", ".join(INITS)}.')
            canvas = canvas_for_dream(str(payload.get('ratio') or DEFAULT_RATIO), max_canvas_px)
        canvas.resolve_init(init)
        return canvas

    def check(self, payload: Mapping[str, Any], limits: Limits) -> None:
        if not str(payload.get('prompt') or '').strip():
            raise RequestError(NO_PROMPT)
        super().check(payload, limits)

    def label(self, payload: Mapping[str, Any]) -> str:
        return 'dream'

    def start(self, item: WorkItem) -> CanvasStart | RunFailed:
        from edalle.expander.canvas import canvas_for_dream
        from edalle.expander.errors import ExpandError

        payload = item.job.payload or {}
        negative = str(payload.get('negative_prompt') or '')
        if self.takes_source(payload):
            start = super().start(item)  # the picture, its refine canvas and the prompt (its own by default)
            if isinstance(start, RunFailed):
                return start
            return CanvasStart(start.canvas, start.image, start.tokens, start.prompt, negative, REFINE)
        try:
            canvas = canvas_for_dream(str(payload.get('ratio') or DEFAULT_RATIO), canvas_limit(payload))
        except ExpandError as exc:
            return RunFailed(str(exc))
        prompt, init = str(payload.get('prompt') or ''), str(payload.get('init') or 'auto')
        return CanvasStart(canvas, None, None, prompt, negative, init)


OPERATION = Dream()


def request(
    *,
    user_id: int,
    guild_id: int | None,
    channel_id: int | None,
    prompt: str,
    negative_prompt: str | None = None,
    ratio: str | None = None,
    init: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
    parent_job_id: int | None = None,
    parent_index: int | None = None,
    source_path: str | None = None,
    source_name: str | None = None,
    width: int | None = None,
    height: int | None = None,
    max_canvas_px: int | None = None,
    preset: str = 'mini',
    request_key: str | None = None,
    priority: int = 0,
    admin: bool = False,
) -> JobRequest:
    """A dream of `prompt` at `ratio` (default 1:1) started as `init` ('random' by default, 'grey' or 'noise'); or, given
    a picture (`parent_job_id` and `parent_index`, or a member's picture at `source_path`) of `width` × `height` px,
    that picture refined towards the prompt. `negative_prompt` is what the views are pushed away from."""
    from_picture = parent_job_id is not None or source_path is not None
    if from_picture and init not in (None, REFINE):
        raise RequestError('A dream from a picture starts from that picture: leave out the way to start (`--init`).')
    payload: dict[str, Any] = {
        'prompt': prompt,
        'negative_prompt': negative_prompt or None,
        'ratio': ratio,
        'init': REFINE if from_picture else init,
        'steps': steps,
        'seed': seed,
        'max_canvas_px': max_canvas_px,
        'preset': preset,
    }
    source = None
    if from_picture:
        payload.update(width=width, height=height)
        source = Source.of(parent_job_id, parent_index, source_path, source_name)
    return OPERATION.build(
        payload,
        user_id=user_id,
        guild_id=guild_id,
        channel_id=channel_id,
        source=source,
        request_key=request_key,
        priority=priority,
        admin=admin,
    )
