"""expand as an operation: its request (from any picture, or an upload) and checks, the sources the store accepts,
its lineage, and its runner's refusals. A real expand on the tiny preset is in test_worker_engine.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from pg_server import shared_server

from edalle import errors
from edalle.jobs import Job, JobStatus, Limits, SqliteJobStore, WorkerCaps
from edalle.jobs.postgres import PostgresJobStore
from edalle.operations import expand, imagine
from edalle.operations.base import RequestError, WorkItem
from edalle.operations.expand import OPERATION
from edalle.outputs import RunFolder

CAPS = WorkerCaps(('imagine:tiny:', 'expand:tiny'))


def test_a_request_starts_from_a_picture_or_an_upload() -> None:
    from_job = expand.request(user_id=1, guild_id=2, channel_id=3, parent_job_id=12, parent_index=2, preset='tiny')
    assert (from_job.kind, from_job.parent_job_id, from_job.parent_index) == ('expand', 12, 2)
    assert from_job.compat_key == 'expand:tiny' and 'source_path' not in from_job.payload
    upload = expand.request(user_id=1, guild_id=2, channel_id=3, source_path='uploads/a.png', source_name='a.png')
    assert upload.parent_job_id is None and upload.payload['source_path'] == 'uploads/a.png'
    assert OPERATION.label({'ratio': '21:9'}) == 'expand 21:9' and OPERATION.bucket == 'daily_edits'
    assert OPERATION.takes_picture and OPERATION.owner_only and not OPERATION.batchable


def test_bad_ratios_and_too_many_steps_are_refused_at_admission() -> None:
    with pytest.raises(RequestError, match='16:9'):
        OPERATION.check({'ratio': '21:1'}, Limits())
    with pytest.raises(errors.RequestTooLarge, match='at most 50 expand steps'):
        OPERATION.check({'ratio': '16:9', 'steps': 51}, Limits(expand_steps=50))
    OPERATION.check({'ratio': '4:3', 'steps': 50}, Limits(expand_steps=50))


async def open_store(backend: str, tmp_path: Path) -> Any:
    if backend == 'sqlite':
        return await SqliteJobStore.open(tmp_path / 'edalle.db')
    return await PostgresJobStore.open(shared_server().create_database())


async def succeed(store: Any, result: dict[str, Any]) -> Job:
    (job,) = await store.claim('w', CAPS, 30.0)
    assert await store.complete(job.lease, result, 1.0) is JobStatus.SUCCEEDED
    return await store.get(job.id)


def picture(index: int, width: int = 256) -> dict[str, Any]:
    return {'index': index, 'path': f'images/x/{index}.png', 'width': width, 'height': 256}


@pytest.mark.parametrize('backend', ['sqlite', 'postgres'])
def test_any_picture_of_any_succeeded_job_is_a_source_and_the_lineage_is_its_chain(backend: str, tmp_path: Path) -> None:
    """imagine → expand → expand of the expand; refusals (a failed parent, a picture that is not there, another
    member's job) are clear and charge nothing."""

    async def main() -> None:
        store = await open_store(backend, tmp_path)
        try:
            await store.set_limit(0, 'cooldown_seconds', 0, actor_id=None)

            def widen(parent: int, index: int = 0, user: int = 1, admin: bool = False) -> Any:
                return expand.request(
                    user_id=user,
                    guild_id=10,
                    channel_id=20,
                    parent_job_id=parent,
                    parent_index=index,
                    preset='tiny',
                    admin=admin,
                )

            await store.enqueue(imagine.request(user_id=1, guild_id=10, channel_id=20, prompt='a fox', n=2, preset='tiny'))
            grid = await succeed(store, {'pictures': [picture(0), picture(1)]})
            await store.enqueue(widen(grid.id, 1))
            wide = await succeed(store, {'pictures': [picture(0, 448)]})
            third = (await store.enqueue(widen(wide.id))).job
            chain = await store.lineage(third.id)
            assert [(j.id, j.kind, j.parent_index) for j in chain] == [
                (grid.id, 'imagine', None),
                (wide.id, 'expand', 1),
                (third.id, 'expand', 0),
            ]
            assert [j.id for j in await store.lineage(third.id, limit=2)] == [wide.id, third.id]
            with pytest.raises(errors.JobNotFound):
                await store.lineage(999)

            used = (await store.quota(10, 1)).edits_used
            await store.enqueue(imagine.request(user_id=1, guild_id=10, channel_id=20, prompt='x', n=2, preset='tiny'))
            (failing,) = await store.claim('w', WorkerCaps(('imagine:tiny:',)), 30.0)
            await store.fail(failing.lease, 'broken', retryable=False)
            refusals = [
                (widen(failing.id), 'has no finished pictures'),
                (widen(third.id), 'has no finished pictures'),  # still queued
                (widen(grid.id, 5), 'no candidate 6'),
                (widen(wide.id, 1), 'no candidate 2'),
                (widen(999), "can't find job #999"),
                (widen(grid.id, 0, user=2), 'belongs to someone else'),
            ]
            for request, words in refusals:
                with pytest.raises(errors.InvalidParent, match=words):
                    await store.enqueue(request)
            assert (await store.quota(10, 1)).edits_used == used and (await store.quota(10, 2)).edits_used == 0
            assert await store.user_jobs(2, active_only=False) == []
            by_admin = await store.enqueue(widen(grid.id, 0, user=2, admin=True))  # the bot checked: an admin
            assert by_admin.job.parent_job_id == grid.id
        finally:
            await store.close()

    asyncio.run(main())


def test_the_runner_says_when_the_picture_or_the_upload_is_gone(tmp_path: Path) -> None:
    ctx = SimpleNamespace(progress=lambda *a: None, should_cancel=lambda: False, check_cancel=lambda: None)

    def job(**fields: Any) -> Job:
        values = {name: None for name in Job.__slots__}  # type: ignore[attr-defined]
        values.update(id=5, kind='expand', status=JobStatus.RUNNING, user_id=1, attempt=1, compat_key='expand:tiny')
        values.update(cancel_requested=False, **fields)
        return Job(**values)

    parent = job(id=4, kind='imagine', status=JobStatus.SUCCEEDED, payload={}, result={'pictures': [picture(0)]})
    gone = WorkItem(job(payload={'ratio': '16:9'}, parent_job_id=4, parent_index=0), RunFolder(tmp_path, 5, 1), parent)
    outside = WorkItem(job(payload={'ratio': '16:9', 'source_path': '../edalle.db'}), RunFolder(tmp_path, 5, 1))
    missing = WorkItem(job(payload={'ratio': '16:9', 'source_path': 'uploads/none.png'}), RunFolder(tmp_path, 5, 1))
    outcomes = OPERATION.run(object(), [gone, outside, missing], ctx)
    assert [type(o) for o in outcomes] == [errors.RunFailed] * 3
    assert 'picture to expand is gone' in str(outcomes[0])
    assert all('Attach it again' in str(o) for o in outcomes[1:])


def test_a_widened_picture_widens_again_and_a_canvas_past_the_limit_is_refused_naming_the_largest() -> None:
    OPERATION.check({'ratio': '21:9', 'width': 448, 'height': 256}, Limits())
    with pytest.raises(RequestError, match='largest allowed is 512 px'):
        OPERATION.check({'ratio': '3:1', 'width': 448, 'height': 256, 'max_canvas_px': 512}, Limits(max_canvas_px=512))
    with pytest.raises(errors.RequestTooLarge, match='at most 512 px'):
        OPERATION.check({'ratio': '16:9', 'width': 256, 'height': 256}, Limits(max_canvas_px=512))  # asks for 1024
    assert OPERATION.fit({'ratio': '16:9'}, Limits(max_canvas_px=512))['max_canvas_px'] == 512
    request = expand.request(user_id=1, guild_id=2, channel_id=3, parent_job_id=4, parent_index=0, width=448, height=256)
    assert (request.payload['width'], request.payload['height']) == (448, 256)


@pytest.mark.slow  # a short run of the tiny models
def test_the_runner_widens_an_upload_in_its_own_shape(tmp_path: Path) -> None:
    from canvas_jobs import Context, item, picture_file, read_picture, tiny_engine

    (tmp_path / 'uploads').mkdir()
    upload = picture_file(tmp_path, 'u.png', (80, 48))  # as `bot.uploads` stores a picture: its shape, whole tokens
    (tmp_path / 'uploads' / 'u.png').write_bytes((tmp_path / upload).read_bytes())
    payload = {'ratio': '3:1', 'steps': 1, 'source_path': 'uploads/u.png', 'width': 80, 'height': 48}
    (result,) = OPERATION.run(tiny_engine(), [item(tmp_path, payload, 'expand')], Context())
    widened = read_picture(tmp_path, result)
    assert widened.shape == (48, 144, 3)  # 5×3 tokens to 9×3: not cropped to a square first
    offset = result['settings']['offset'][1] * 16
    assert np.array_equal(
        widened[:, offset : offset + 80], read_picture(tmp_path, {'pictures': [{'path': upload, 'width': 80, 'height': 48}]})
    )
    assert 'timelapse' in result['media']
