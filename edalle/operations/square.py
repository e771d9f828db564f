"""square: make a widened (or heightened) picture square again, its short side grown to its long one.

A canvas of the expander (`canvas_for_square`): 448×256 → 448×448, the new rows split above and below. A square
picture is refused (there is nothing to add), as is a result past the admins' `max_canvas_px`. Any picture of
any succeeded job is a source, or a member's upload; the prompt defaults to the picture's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edalle.operations.base import Source
from edalle.operations.optimising import CanvasOperation

if TYPE_CHECKING:
    from edalle.expander.canvas import Canvas
    from edalle.jobs.store import JobRequest


class Square(CanvasOperation):
    name = 'square'
    title = 'make square'
    discord = 'bot.cogs.canvas'
    filename = 'square.png'
    gone = 'The picture to make square is gone. Pick it again.'
    upload_gone = 'The image to make square is gone. Attach it again.'

    def canvas(self, payload: Mapping[str, Any], size: tuple[int, int] | None, max_canvas_px: int) -> Canvas:
        from edalle.expander.canvas import CanvasError, canvas_for_square

        if size is None:
            raise CanvasError('Say which picture to make square: its size is missing.')
        return canvas_for_square(size, max_canvas_px)


OPERATION = Square()


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
    prompt: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
    max_canvas_px: int | None = None,
    preset: str = 'mini',
    request_key: str | None = None,
    priority: int = 0,
    admin: bool = False,
) -> JobRequest:
    """Make picture `parent_index` of job `parent_job_id` (or a member's picture stored at `source_path`), of `width` ×
    `height` px, square; the prompt defaults to the picture's own."""
    source = Source.of(parent_job_id, parent_index, source_path, source_name)
    payload = {'prompt': prompt, 'steps': steps, 'seed': seed, 'preset': preset}
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
