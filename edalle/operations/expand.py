"""expand: widen a picture to another aspect ratio with E-DALL-E (CLIP-guided VQGAN latents, `edalle.expander`).

The source is any picture of a succeeded job (a candidate keeps its exact token grid) or a member's own
upload, which the bot checked and stored under `uploads/` before queueing. The prompt defaults to the
parent job's; an upload has none of its own, so an empty prompt lets the picture alone guide the new
sides. The admins' `expand_steps` limit is also what is asked for (lower is faster and rougher).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edalle.errors import RequestTooLarge, RunFailed
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

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from edalle.jobs.limits import Limits
    from edalle.jobs.store import JobRequest

GONE = 'The picture to expand is gone. Run the imagine again and pick a new one.'
UPLOAD_GONE = 'The image to expand is gone. Attach it again with `.expand`.'


class Expand(Operation):
    name = 'expand'
    title = 'expand'
    bucket = 'daily_edits'
    compute = 'optimising'
    discord = 'bot.cogs.expand'
    takes_picture = True

    def check(self, payload: Mapping[str, Any], limits: Limits) -> None:
        from edalle.expander.errors import ExpandError
        from edalle.expander.geometry import compute_geometry

        try:
            compute_geometry(str(payload.get('ratio') or '16:9'))
        except ExpandError as exc:
            raise RequestError(str(exc)) from None
        if (payload.get('steps') or 0) > limits.expand_steps:
            raise RequestTooLarge('expand steps', limits.expand_steps)

    def label(self, payload: Mapping[str, Any]) -> str:
        return f'expand {payload.get("ratio") or "16:9"}'

    def run(self, engine: Any, items: Sequence[WorkItem], ctx: RunContext) -> list[Outcome]:
        return [self._one(engine, item, ctx) for item in items]

    def _one(self, engine: Any, item: WorkItem, ctx: RunContext) -> Outcome:
        import numpy as np

        from edalle.expander.sources import fit_square

        source = load_source(item, gone=GONE, upload_gone=UPLOAD_GONE)
        if isinstance(source, RunFailed):
            return source
        picture = source.picture
        tokens = np.asarray(picture.tokens, dtype=np.int32) if picture is not None and picture.tokens else None
        image = source.image if picture is not None else fit_square(source.image)  # an upload: already 256×256
        return self._expand(engine, item, ctx, image, tokens, item.job.payload.get('prompt') or source.prompt)

    def _expand(
        self, engine: Any, item: WorkItem, ctx: RunContext, source: Image.Image, tokens: np.ndarray | None, prompt: str
    ) -> Outcome:
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
            result = engine.expand(request, progress=ctx.progress, should_cancel=ctx.should_cancel)
        except ExpandCancelled:
            raise Cancelled() from None
        except ValueError as exc:  # the expander's refusals (ExpandError: a bad ratio …) are worded for users
            return RunFailed(str(exc))
        path = item.folder.file('expanded.png')
        save_png(result.image, path)
        picture = Picture(0, item.folder.rel(path), result.width, result.height, seed=result.seed)
        return {
            'pictures': [picture.to_json()],
            'settings': result.settings,
            'seed': result.seed,
            'prompt': prompt,
            'parent_job_id': job.parent_job_id,
            'parent_index': job.parent_index,
            'source_path': payload.get('source_path'),
        }


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
    preset: str = 'mini',
    request_key: str | None = None,
    priority: int = 0,
    admin: bool = False,
) -> JobRequest:
    """Widen picture `parent_index` of job `parent_job_id`, or a member's picture already fitted and stored at
    `source_path` (`uploads/….png`); the prompt defaults to the parent's."""
    source = (
        Source(upload=source_path, upload_name=source_name)
        if source_path is not None
        else Source(job_id=parent_job_id, index=parent_index)
    )
    payload = {'prompt': prompt, 'ratio': ratio, 'steps': steps, 'seed': seed, 'preset': preset}
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
