"""expand: widen a picture to another aspect ratio with E-DALL-E (CLIP-guided VQGAN latents, `edalle.expander`).

The source is any picture of a succeeded job (a candidate keeps its exact token grid) or a member's own
upload, which the bot checked and stored under `uploads/` keeping its shape before queueing; a widened
picture widens again (a 448×256 picture to 21:9 or to 1:1 and beyond …). The prompt defaults to the parent
job's; an upload has none of its own, so an empty prompt lets the picture alone guide the new sides. Like
every optimising operation (`optimising.CanvasOperation`) it carries its source's size, so a canvas past
the admins' `max_canvas_px` is refused at admission naming the largest allowed, and its result has a
time-lapse of the run; the admins' `expand_steps` limit is also what is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edalle.operations.base import PICTURE_SIDE, Source
from edalle.operations.optimising import CanvasOperation

if TYPE_CHECKING:
    from edalle.expander.canvas import Canvas
    from edalle.jobs.store import JobRequest

GONE = 'The picture to expand is gone. Run the imagine again and pick a new one.'
UPLOAD_GONE = 'The image to expand is gone. Attach it again with `.expand`.'


class Expand(CanvasOperation):
    name = 'expand'
    title = 'expand'
    discord = 'bot.cogs.expand'
    steps_noun = 'expand steps'
    filename = 'expanded.png'
    gone = GONE
    upload_gone = UPLOAD_GONE

    def canvas(self, payload: Mapping[str, Any], size: tuple[int, int] | None, max_canvas_px: int) -> Canvas:
        from edalle.expander.canvas import canvas_for_ratio

        # a request without a size (queued before sizes were carried) is checked as a candidate's 256×256
        return canvas_for_ratio(size or (PICTURE_SIDE, PICTURE_SIDE), str(payload.get('ratio') or '16:9'), max_canvas_px)

    def label(self, payload: Mapping[str, Any]) -> str:
        return f'expand {payload.get("ratio") or "16:9"}'


OPERATION = Expand()


def request(
    *,
    user_id: int,
    guild_id: int | None,
    channel_id: int | None,
    parent_job_id: int | None = None,
    parent_index: int | None = None,
    source_path: str | None = None,
    source_name: str | None = None,
    prompt: str | None = None,
    ratio: str = '16:9',
    steps: int | None = None,
    seed: int | None = None,
    width: int | None = None,
    height: int | None = None,
    max_canvas_px: int | None = None,
    preset: str = 'mini',
    request_key: str | None = None,
    priority: int = 0,
    admin: bool = False,
) -> JobRequest:
    """Widen picture `parent_index` of job `parent_job_id`, or a member's picture already fitted and stored at
    `source_path` (`uploads/….png`); the prompt defaults to the parent's. `width` × `height` is the source's size
    (the canvas is checked against the admins' limit at admission); `max_canvas_px` None: the member's limit."""
    source = Source.of(parent_job_id, parent_index, source_path, source_name)
    payload = {'prompt': prompt, 'ratio': ratio, 'steps': steps, 'seed': seed, 'preset': preset}
    if width is not None and height is not None:
        payload.update(width=width, height=height)
    if max_canvas_px is not None:
        payload['max_canvas_px'] = max_canvas_px
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
