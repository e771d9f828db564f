"""pan as an operation: its request and checks (directions, the admins' canvas limit named in the refusal, nothing
charged), and its runner on the tiny models (the picture kept exact on its side, a time-lapse). The Discord path is
in test_bot_canvas.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from canvas_jobs import Context, assert_timelapse_of, item, parent, read_picture, tiny_engine

from edalle import errors
from edalle.jobs import Limits, SqliteJobStore, WorkerCaps
from edalle.operations import pan
from edalle.operations.base import RequestError, pictures_of
from edalle.operations.pan import OPERATION


def test_a_request_carries_the_direction_and_the_size() -> None:
    request = pan.request(user_id=1, guild_id=2, channel_id=3, parent_job_id=8, parent_index=0, width=512, height=512,
                          direction='right', preset='tiny')  # fmt: skip
    assert (request.kind, request.compat_key, request.payload['direction']) == ('pan', 'pan:tiny', 'right')
    assert [OPERATION.label({'direction': d}) for d in pan.DIRECTIONS] == ['pan left', 'pan right', 'pan up', 'pan down']
    assert OPERATION.bucket == 'daily_edits' and OPERATION.compute == 'optimising'


def test_checks_refuse_a_bad_direction_and_a_canvas_past_the_limit_naming_the_largest() -> None:
    fine = {'direction': 'right', 'width': 512, 'height': 512}
    OPERATION.check(fine, Limits())
    with pytest.raises(RequestError, match='choose left, right, up or down'):
        OPERATION.check({**fine, 'direction': 'sideways'}, Limits())
    with pytest.raises(RequestError, match='size is missing'):
        OPERATION.check({'direction': 'up'}, Limits())
    with pytest.raises(RequestError, match=r'768×512 picture; the largest allowed is 512 px on the longest side'):
        OPERATION.check({**fine, 'max_canvas_px': 512}, Limits(max_canvas_px=512))
    assert OPERATION.estimate_seconds({**fine, 'steps': 100}) > OPERATION.estimate_seconds({**fine, 'steps': 50}) > 0


def test_past_the_limit_nothing_is_queued_or_charged(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteJobStore.open(tmp_path / 'edalle.db')
        try:
            await store.set_limit(0, 'cooldown_seconds', 0, actor_id=None)
            await store.enqueue(
                pan.request(
                    user_id=1,
                    guild_id=10,
                    channel_id=20,
                    source_path='uploads/a.png',
                    width=256,
                    height=256,
                    direction='left',
                    preset='tiny',
                )  # fmt: skip
            )
            (first,) = await store.claim('w', WorkerCaps(('pan:tiny',)), 30)
            wide = {'index': 0, 'path': 'images/1/1/panned.png', 'width': 384, 'height': 256}
            await store.complete(first.lease, {'pictures': [wide]}, 1.0)
            await store.set_limit(10, 'max_canvas_px', 384, actor_id=None)
            used = (await store.quota(10, 1)).edits_used
            request = pan.request(user_id=1, guild_id=10, channel_id=20, parent_job_id=first.id, parent_index=0,
                                  width=384, height=256, direction='right', max_canvas_px=384, preset='tiny')  # fmt: skip
            with pytest.raises(RequestError, match='largest allowed is 384 px'):
                await store.enqueue(request)
            assert (await store.quota(10, 1)).edits_used == used
            assert [j.id for j in await store.user_jobs(1, active_only=False)] == [first.id]
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.slow  # a short run of the tiny models
def test_the_runner_pans_keeping_the_picture_and_records_a_time_lapse(tmp_path: Path) -> None:
    source = parent(tmp_path, (64, 64), prompt='')
    engine, ctx = tiny_engine(), Context()
    payload = {'direction': 'left', 'width': 64, 'height': 64, 'steps': 2, 'seed': 1, 'prompt': 'a cliff'}
    (result,) = OPERATION.run(engine, [item(tmp_path, payload, 'pan', source)], ctx)
    assert [(p.width, p.height) for p in pictures_of(result)] == [(96, 64)]
    assert np.array_equal(read_picture(tmp_path, result)[:, 32:], read_picture(tmp_path, source.result))
    assert result['prompt'] == 'a cliff' and result['settings']['canvas'] == 'pan'
    assert_timelapse_of(tmp_path, result, engine.results[0], steps=2, every=1)
    assert {stage for stage, *_ in ctx.reports} == {'pan'}


def test_a_cancel_stops_the_run_and_running_out_of_memory_fails_it_in_words(tmp_path: Path) -> None:
    """The worker's cancel reaches the runner as `Cancelled`; a canvas that does not fit the worker's memory fails the
    job (no retry: it would run out again) with a sentence saying what to do."""
    from types import SimpleNamespace

    from edalle.expander.errors import ExpandCancelled
    from edalle.operations.base import Cancelled
    from edalle.operations.optimising import TOO_BIG_FOR_WORKER

    source = parent(tmp_path, (64, 64))
    payload = {'direction': 'up', 'width': 64, 'height': 64, 'steps': 2}

    def engine(error: BaseException) -> SimpleNamespace:
        def run_canvas(request: object, progress: object = None, should_cancel: object = None) -> None:
            raise error

        return SimpleNamespace(run_canvas=run_canvas)

    with pytest.raises(Cancelled):
        OPERATION.run(engine(ExpandCancelled(1, 2)), [item(tmp_path, payload, 'pan', source)], Context())
    (failed,) = OPERATION.run(engine(MemoryError()), [item(tmp_path, payload, 'pan', source)], Context())
    assert isinstance(failed, errors.RunFailed) and str(failed) == TOO_BIG_FOR_WORKER
    assert 'max_canvas_px' in TOO_BIG_FOR_WORKER
    with pytest.raises(ZeroDivisionError):  # anything else is a bug: the worker logs it and retries
        OPERATION.run(engine(ZeroDivisionError()), [item(tmp_path, payload, 'pan', source)], Context())
