"""upscale: a picture ×4 with a super-resolution network (Real-ESRGAN x4plus, `edalle.models.upscaler`).

Re-decoding VQGAN tokens at a larger size is not super-resolution (a token is a 16-px patch), so this is a
network trained for it, tiled so memory stays bounded. Any picture of any succeeded job is a source (a
candidate, a widened picture, …), or a member's upload kept at its own size. The admins' cap on the input
(`upscale_max_pixels`) is checked at admission from the size the request carries, and again by the runner
on the picture itself. It counts against `daily_edits`. The weights are an add-on (`edalle models download
--preset upscale`); without them workers do not serve it and the bot hides its button.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edalle.errors import RunFailed
from edalle.operations.base import (
    Cancelled,
    Operation,
    Outcome,
    Picture,
    RequestError,
    RunContext,
    Source,
    WorkItem,
    load_source,
)
from edalle.upscale import SCALE, UpscaleInputTooLarge, check_input_size, upscale_installed

if TYPE_CHECKING:
    from edalle.jobs.limits import Limits
    from edalle.jobs.store import JobRequest

GONE = 'The picture to upscale is gone. Pick it again and press ⏫.'
UPLOAD_GONE = 'The image to upscale is gone. Attach it again with `.upscale`.'
NOT_INSTALLED = (
    'Upscaling needs its weights, which are not installed here: an admin can fetch them with '
    '`edalle models download --preset upscale` (or bring them with `edalle models import DIR --preset upscale`).'
)


class Upscale(Operation):
    name = 'upscale'
    title = 'upscale ×4'
    bucket = 'daily_edits'
    compute = 'feed-forward'
    discord = 'bot.cogs.upscale'
    takes_picture = True
    text_fields = ()  # nothing to write: no prompt

    def check(self, payload: Mapping[str, Any], limits: Limits) -> None:
        width, height = payload.get('width'), payload.get('height')
        if not isinstance(width, int) or not isinstance(height, int) or width < 1 or height < 1:
            raise RequestError('Say which picture to upscale: its size is missing.')
        check_input_size(width, height, limits.upscale_max_pixels)

    def label(self, payload: Mapping[str, Any]) -> str:
        return f'upscale ×{SCALE}'

    def missing(self, preset: str, data_dir: Path) -> str | None:
        return None if upscale_installed(data_dir, preset) else NOT_INSTALLED

    def run(self, engine: Any, items: Sequence[WorkItem], ctx: RunContext) -> list[Outcome]:
        return [self._one(engine, item, ctx) for item in items]

    def _one(self, engine: Any, item: WorkItem, ctx: RunContext) -> Outcome:
        from edalle.outputs import save_png

        source = load_source(item, gone=GONE, upload_gone=UPLOAD_GONE)
        if isinstance(source, RunFailed):
            return source
        image, payload = source.image, item.job.payload
        try:  # the size the request carried passed the admins' cap at admission; the picture may not exceed it
            check_input_size(image.width, image.height, int(payload['width']) * int(payload['height']))
        except UpscaleInputTooLarge as exc:
            return RunFailed(str(exc))
        ctx.check_cancel()

        def progress(done: int, total: int) -> None:
            if ctx.should_cancel():
                raise Cancelled()
            ctx.progress('upscale', done, total, None)

        result = engine.upscale(image, progress=progress)
        path = item.folder.file('upscaled.png')
        save_png(result, path)
        seed = source.picture.seed if source.picture is not None else None
        picture = Picture(0, item.folder.rel(path), result.width, result.height, seed=seed)
        return {
            'pictures': [picture.to_json()],
            'prompt': source.prompt,
            'source_size': [image.width, image.height],
            'parent_job_id': item.job.parent_job_id,
            'parent_index': item.job.parent_index,
            'source_path': item.job.payload.get('source_path'),
        }


OPERATION = Upscale()


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
    preset: str = 'mini',
    request_key: str | None = None,
    priority: int = 0,
    admin: bool = False,
) -> JobRequest:
    """Upscale picture `parent_index` of job `parent_job_id` (or a member's picture stored at `source_path`), whose
    size is `width` × `height` (checked against the admins' cap at admission, and by the runner on the picture)."""
    source = Source.of(parent_job_id, parent_index, source_path, source_name)
    payload = {'width': width, 'height': height, 'preset': preset}
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
