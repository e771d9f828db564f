"""pan: grow a picture on one side (left, right, up or down) by half its short side, with new content there.

A canvas of the expander (`canvas_for_pan`): 256×256 → 384×256 to the right, then → 512×256, so each pan moves a
square view by half its width. Past the admins' `max_canvas_px` it is refused naming the largest allowed. Any
picture of any succeeded job is a source, or a member's upload (kept in its own shape); the prompt defaults to
the picture's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edalle.operations.base import Source
from edalle.operations.optimising import CanvasOperation

if TYPE_CHECKING:
    from edalle.expander.canvas import Canvas
    from edalle.jobs.store import JobRequest

DIRECTIONS = ('left', 'right', 'up', 'down')


class Pan(CanvasOperation):
    name = 'pan'
    title = 'pan'
    discord = 'bot.cogs.canvas'
    filename = 'panned.png'
    gone = 'The picture to pan is gone. Pick it again.'
    upload_gone = 'The image to pan is gone. Attach it again with `.pan`.'

    def canvas(self, payload: Mapping[str, Any], size: tuple[int, int] | None, max_canvas_px: int) -> Canvas:
        from edalle.expander.canvas import CanvasError, canvas_for_pan

        direction = payload.get('direction')
        if direction not in DIRECTIONS:
            raise CanvasError(f'{direction!r} is not a direction to pan; choose left, right, up or down.')
        if size is None:
            raise CanvasError('Say which picture to pan: its size is missing.')
        return canvas_for_pan(size, direction, max_canvas_px)

    def label(self, payload: Mapping[str, Any]) -> str:
        return f'pan {payload.get("direction")}'


OPERATION = Pan()


def request(
    *,
    user_id: int,
    guild_id: int | None,
    channel_id: int | None,
    width: int,
    height: int,
    direction: str,
    parent_job_id: int | None = None,
    parent_index: int | None = None,
    source_path: str | None = None,
    source_name: str | None = None,
    prompt: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
    max_canvas_px: int | None = None,
    preset: str = 'mini',
    request_key: str | None = None,
    priority: int = 0,
    admin: bool = False,
) -> JobRequest:
    """Pan picture `parent_index` of job `parent_job_id` (or a member's picture stored at `source_path`), of `width` ×
    `height` px, towards `direction` ('left', 'right', 'up', 'down'); the prompt defaults to the picture's own."""
    source = Source.of(parent_job_id, parent_index, source_path, source_name)
    payload = {'prompt': prompt, 'direction': direction, 'steps': steps, 'seed': seed, 'preset': preset}
    payload.update(width=width, height=height, max_canvas_px=max_canvas_px)
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
