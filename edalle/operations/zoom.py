"""zoom: zoom out of a picture by 1.5× or 2× (the picture in the middle of a larger canvas, a ring of new cells around).

A canvas of the expander (`canvas_for_zoom`): 256×256 → 384×384 at 1.5×, → 512×512 at 2×. Where the zoomed
picture would pass the admins' `max_canvas_px`, the canvas is the limit's size and the picture is first scaled
down into its middle, so a chain of zooms keeps a constant size. Any picture of any succeeded job is a source, or
a member's upload (kept in its own shape); the prompt defaults to the picture's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edalle.operations.base import Source
from edalle.operations.optimising import CanvasOperation

if TYPE_CHECKING:
    from edalle.expander.canvas import Canvas
    from edalle.jobs.store import JobRequest

FACTORS = (1.5, 2.0)  # what members may ask for (`expander.canvas.ZOOM_FACTORS`)


def factor_text(factor: float) -> str:
    """1.5 → '1.5×', 2.0 → '2×'."""
    return f'{factor:g}×'


class Zoom(CanvasOperation):
    name = 'zoom'
    title = 'zoom out'
    discord = 'bot.cogs.canvas'
    filename = 'zoomed.png'
    gone = 'The picture to zoom out of is gone. Pick it again.'
    upload_gone = 'The image to zoom out of is gone. Attach it again with `.zoom`.'

    def canvas(self, payload: Mapping[str, Any], size: tuple[int, int] | None, max_canvas_px: int) -> Canvas:
        from edalle.expander.canvas import CanvasError, canvas_for_zoom

        factor = payload.get('factor', 2.0)
        if not isinstance(factor, int | float) or isinstance(factor, bool) or float(factor) not in FACTORS:
            raise CanvasError(f'Zoom out by 1.5 or 2 (got {factor!r}).')
        if size is None:
            raise CanvasError('Say which picture to zoom out of: its size is missing.')
        return canvas_for_zoom(size, float(factor), max_canvas_px)

    def label(self, payload: Mapping[str, Any]) -> str:
        return f'zoom out {factor_text(float(payload.get("factor") or 2.0))}'


OPERATION = Zoom()


def request(
    *,
    user_id: int,
    guild_id: int | None,
    channel_id: int | None,
    width: int,
    height: int,
    factor: float = 2.0,
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
    """Zoom out of picture `parent_index` of job `parent_job_id` (or a member's picture stored at `source_path`), of
    `width` × `height` px, by `factor` (1.5 or 2); the prompt defaults to the picture's own, `max_canvas_px` None to
    the member's limit (filled in at admission)."""
    source = Source.of(parent_job_id, parent_index, source_path, source_name)
    payload = {'prompt': prompt, 'factor': float(factor), 'steps': steps, 'seed': seed, 'preset': preset}
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
