"""zoom as an operation: its request and checks (factors, the admins' canvas and step limits, refused before anything
is charged), its ETA, and its runner on the tiny models (the picture kept exact in the middle, a time-lapse whose
last frame is the picture, constant size at the limit). The Discord path is in test_bot_canvas.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from canvas_jobs import Context, assert_timelapse_of, item, parent, read_picture, tiny_engine

from edalle import errors
from edalle.jobs import Limits, SqliteJobStore, WorkerCaps
from edalle.operations import imagine, zoom
from edalle.operations.base import RequestError, pictures_of
from edalle.operations.zoom import OPERATION


def test_a_request_carries_the_factor_and_the_size_and_reads_as_a_step_of_the_lineage() -> None:
    request = zoom.request(user_id=1, guild_id=2, channel_id=3, parent_job_id=8, parent_index=1, width=256, height=256)
    assert (request.kind, request.parent_job_id, request.parent_index, request.compat_key) == ('zoom', 8, 1, 'zoom:mini')
    assert request.payload['factor'] == 2.0 and (request.payload['width'], request.payload['height']) == (256, 256)
    assert OPERATION.label({'factor': 2.0}) == 'zoom out 2×' and OPERATION.label({'factor': 1.5}) == 'zoom out 1.5×'
    assert OPERATION.bucket == 'daily_edits' and OPERATION.compute == 'optimising' and OPERATION.takes_picture
    upload = zoom.request(user_id=1, guild_id=2, channel_id=3, source_path='uploads/a.png', width=336, height=256)
    assert upload.parent_job_id is None and upload.payload['source_path'] == 'uploads/a.png'


def test_checks_refuse_what_cannot_run_naming_the_limit() -> None:
    fine = {'factor': 1.5, 'width': 256, 'height': 256, 'steps': 50, 'max_canvas_px': 1024}
    OPERATION.check(fine, Limits())
    OPERATION.check({**fine, 'width': 1024, 'height': 1024, 'factor': 2.0}, Limits())  # at the limit: scaled down
    with pytest.raises(RequestError, match='1.5 or 2'):
        OPERATION.check({**fine, 'factor': 3}, Limits())
    with pytest.raises(RequestError, match='size is missing'):
        OPERATION.check({'factor': 2.0}, Limits())
    with pytest.raises(errors.RequestTooLarge, match='at most 50 optimisation steps'):
        OPERATION.check({**fine, 'steps': 51}, Limits(expand_steps=50))
    with pytest.raises(errors.RequestTooLarge, match='at most 512 px on the longest side'):
        OPERATION.check(fine, Limits(max_canvas_px=512))
    with pytest.raises(RequestError, match='16-px limit leaves no room'):
        OPERATION.check({**fine, 'max_canvas_px': 16}, Limits())
    # the bot asks for the member's limit; `fit` fills it in, or lowers a larger one
    assert OPERATION.fit({'factor': 2.0}, Limits(max_canvas_px=768))['max_canvas_px'] == 768
    assert OPERATION.fit({'max_canvas_px': 1024}, Limits(max_canvas_px=512))['max_canvas_px'] == 512
    assert OPERATION.fit({'max_canvas_px': 256}, Limits())['max_canvas_px'] == 256


def test_the_run_estimate_grows_with_the_canvas_and_the_steps() -> None:
    small = OPERATION.estimate_seconds({'factor': 1.5, 'width': 256, 'height': 256, 'steps': 100})
    big = OPERATION.estimate_seconds({'factor': 2.0, 'width': 256, 'height': 256, 'steps': 100})
    fewer = OPERATION.estimate_seconds({'factor': 2.0, 'width': 256, 'height': 256, 'steps': 10})
    assert small is not None and big is not None and fewer is not None
    assert 0 < fewer < small < big
    assert OPERATION.estimate_seconds({'factor': 2.0}) is None  # no size: nothing to estimate


def test_a_zoom_past_the_limit_is_refused_at_admission_and_charges_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteJobStore.open(tmp_path / 'edalle.db')
        try:
            await store.set_limit(0, 'cooldown_seconds', 0, actor_id=None)
            await store.enqueue(imagine.request(user_id=1, guild_id=10, channel_id=20, prompt='a', n=1, preset='tiny'))
            (grid,) = await store.claim('w', WorkerCaps(('imagine:tiny:',)), 30)
            await store.complete(grid.lease, {'pictures': [{'index': 0, 'path': 'a.png'}]}, 1.0)
            await store.set_limit(10, 'max_canvas_px', 16, actor_id=None)

            def of(limit: int | None) -> object:
                return zoom.request(
                    user_id=1, guild_id=10, channel_id=20, parent_job_id=grid.id, parent_index=0,
                    width=256, height=256, max_canvas_px=limit, preset='tiny',
                )  # fmt: skip

            with pytest.raises(errors.RequestTooLarge, match='at most 16 px'):
                await store.enqueue(of(None))  # the default limit (1024) is more than this server allows
            assert (await store.quota(10, 1)).edits_used == 0
            await store.set_limit(10, 'max_canvas_px', 2048, actor_id=None)
            admitted = await store.enqueue(of(2048))
            assert admitted.job.kind == 'zoom' and admitted.quota.edits_used == 1
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.slow  # two short runs of the tiny models
def test_the_runner_zooms_keeping_the_picture_exact_and_records_a_time_lapse(tmp_path: Path) -> None:
    source = parent(tmp_path, (64, 64))
    engine, ctx = tiny_engine(), Context()
    payload = {'factor': 2.0, 'width': 64, 'height': 64, 'steps': 2, 'seed': 5, 'max_canvas_px': 1024}
    (result,) = OPERATION.run(engine, [item(tmp_path, payload, 'zoom', source)], ctx)
    assert not isinstance(result, errors.RunFailed), result
    (picture,) = pictures_of(result)
    assert (picture.width, picture.height, picture.seed) == (128, 128, 5)
    zoomed = read_picture(tmp_path, result)
    original = read_picture(tmp_path, source.result)
    assert np.array_equal(zoomed[32:96, 32:96], original)  # the picture itself, bit for bit, in the middle
    assert result['prompt'] == 'a quiet harbour' and result['parent_job_id'] == 4
    assert result['settings']['canvas'] == 'zoom' and engine.requests[0].record_every == 1
    assert_timelapse_of(tmp_path, result, engine.results[0], steps=2, every=1)
    assert {stage for stage, *_ in ctx.reports} == {'zoom'} and any(preview for *_, preview in ctx.reports)

    # At the limit the picture is first scaled down: a zoom of the 128-px result with a 128-px limit stays 128 px.
    again = parent(tmp_path, (128, 128))
    payload = {'factor': 2.0, 'width': 128, 'height': 128, 'steps': 1, 'max_canvas_px': 128}
    (chained,) = OPERATION.run(engine, [item(tmp_path, payload, 'zoom', again, job_id=8)], ctx)
    assert [(p.width, p.height) for p in pictures_of(chained)] == [(128, 128)]
    assert chained['settings']['source_scale'] == 0.5
