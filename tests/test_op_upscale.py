"""upscale as an operation: its request (any picture, with its size) and the admins' input cap, which workers can
serve it, and its runner (real tiny network). The Discord path is in test_bot_e2e.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from edalle import errors
from edalle.jobs import Job, JobStatus, Limits, SqliteJobStore, WorkerCaps
from edalle.operations import expand, imagine, upscale
from edalle.operations.base import RequestError, WorkItem, pictures_of
from edalle.operations.upscale import OPERATION
from edalle.outputs import RunFolder
from edalle.upscale import UpscaleInputTooLarge, load_upscaler_for


def test_a_request_carries_the_size_and_the_cap_refuses_big_pictures_naming_the_largest() -> None:
    request = upscale.request(user_id=1, guild_id=2, channel_id=3, parent_job_id=8, parent_index=1, width=448, height=256)
    assert (request.kind, request.parent_job_id, request.payload['width']) == ('upscale', 8, 448)
    assert OPERATION.bucket == 'daily_edits' and OPERATION.compute == 'feed-forward' and OPERATION.label({}) == 'upscale ×4'
    OPERATION.check({'width': 512, 'height': 512}, Limits())
    with pytest.raises(UpscaleInputTooLarge, match='largest I upscale here is 65,536 pixels, e.g. 256×256'):
        OPERATION.check({'width': 448, 'height': 256}, Limits(upscale_max_pixels=256 * 256))
    with pytest.raises(RequestError, match='size is missing'):
        OPERATION.check({'width': None, 'height': 256}, Limits())
    assert OPERATION.texts({'prompt': 'ignored'}) == []  # nothing a member writes


def test_workers_serve_it_only_where_its_weights_are(tmp_path: Path) -> None:
    assert OPERATION.missing('tiny', tmp_path) is None  # the tiny preset makes its own
    assert 'edalle models download --preset upscale' in OPERATION.missing('mini', tmp_path)


def test_any_picture_is_a_source_and_an_oversized_one_charges_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteJobStore.open(tmp_path / 'edalle.db')
        try:
            await store.set_limit(0, 'cooldown_seconds', 0, actor_id=None)
            caps = WorkerCaps(('imagine:tiny:', 'expand:tiny'))
            await store.enqueue(imagine.request(user_id=1, guild_id=10, channel_id=20, prompt='a', n=1, preset='tiny'))
            (job,) = await store.claim('w', caps, 30)
            await store.complete(job.lease, {'pictures': [{'index': 0, 'path': 'a.png'}]}, 1.0)
            await store.enqueue(expand.request(user_id=1, guild_id=10, channel_id=20, parent_job_id=job.id, parent_index=0))
            (wide,) = await store.claim('w', WorkerCaps(('expand:',)), 30)
            await store.complete(wide.lease, {'pictures': [{'index': 0, 'path': 'w.png', 'width': 448, 'height': 256}]}, 1.0)
            await store.set_limit(10, 'upscale_max_pixels', 300 * 300, actor_id=None)

            def of(parent: int, width: int, height: int) -> Any:
                return upscale.request(
                    user_id=1, guild_id=10, channel_id=20, parent_job_id=parent, parent_index=0, width=width, height=height
                )

            before = (await store.quota(10, 1)).edits_used
            with pytest.raises(UpscaleInputTooLarge, match='448×256'):
                await store.enqueue(of(wide.id, 448, 256))
            assert (await store.quota(10, 1)).edits_used == before
            admitted = await store.enqueue(of(job.id, 256, 256))
            assert admitted.job.kind == 'upscale' and admitted.quota.edits_used == before + 1
            with pytest.raises(errors.InvalidParent, match='no candidate 2'):
                await store.enqueue(
                    upscale.request(
                        user_id=1, guild_id=10, channel_id=20, parent_job_id=job.id, parent_index=1, width=256, height=256
                    )
                )
        finally:
            await store.close()

    asyncio.run(main())


def job(**fields: Any) -> Job:
    values = {name: None for name in Job.__slots__}  # type: ignore[attr-defined]
    values.update(id=7, kind='upscale', status=JobStatus.RUNNING, user_id=1, attempt=1, compat_key='upscale:tiny')
    values.update(cancel_requested=False, **fields)
    return Job(**values)


@pytest.mark.slow  # generates the tiny preset's files: a few seconds the first time
def test_the_runner_upscales_with_the_tiny_network_and_refuses_a_picture_bigger_than_asked(tmp_path: Path) -> None:
    (tmp_path / 'images' / '4').mkdir(parents=True)
    Image.new('RGB', (448, 256), (10, 120, 200)).save(tmp_path / 'images' / '4' / 'w.png')
    parent = job(
        id=4, kind='expand', status=JobStatus.SUCCEEDED, payload={'prompt': 'a bay'},
        result={'pictures': [{'index': 0, 'path': 'images/4/w.png', 'width': 448, 'height': 256, 'seed': 9}]},
    )  # fmt: skip
    upscaler = load_upscaler_for('tiny', tmp_path)
    engine = SimpleNamespace(upscale=upscaler.upscale)
    stages: list[tuple[str, int, int]] = []
    ctx = SimpleNamespace(
        progress=lambda stage, done, total, preview=None: stages.append((stage, done, total)),
        should_cancel=lambda: False,
        check_cancel=lambda: None,
    )
    fine = WorkItem(
        job(payload={'width': 448, 'height': 256}, parent_job_id=4, parent_index=0), RunFolder(tmp_path, 7, 1), parent
    )
    lying = WorkItem(
        job(payload={'width': 256, 'height': 256}, parent_job_id=4, parent_index=0), RunFolder(tmp_path, 8, 1), parent
    )
    result, refused = OPERATION.run(engine, [fine, lying], ctx)
    (picture,) = pictures_of(result)
    assert (picture.width, picture.height) == (1792, 1024) and picture.seed == 9
    with Image.open(tmp_path / picture.path) as image:
        assert image.size == (1792, 1024)
    assert result['prompt'] == 'a bay' and result['source_size'] == [448, 256]
    assert stages and stages[-1][0] == 'upscale' and stages[-1][1] == stages[-1][2]
    assert isinstance(refused, errors.RunFailed) and '448×256' in str(refused)
