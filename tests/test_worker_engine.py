"""End to end through the real engine: a worker process on the `tiny` preset (real architectures,
small random weights, CPU) runs an imagine job, an expand job on its best candidate, and an expand of that
widened picture; the lineage of the last reads as the chain of all three."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from PIL import Image
from worker_runners import job_row, wait_until

from bot.operations import lineage_text
from edalle.jobs import JobRequest, SqliteJobStore
from edalle.operations import expand as expand_op
from edalle.operations import imagine as imagine_op

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def enqueue(db, request: JobRequest) -> int:
    async def main():
        store = await SqliteJobStore.open(db)
        try:
            await store.set_setting(0, 'cooldown_seconds', 0, actor_id=None)
            return (await store.enqueue(request)).job.id
        finally:
            await store.close()

    return asyncio.run(main())


def test_imagine_then_expand_on_the_tiny_preset(tmp_path, bot_data_dir):
    db, data = tmp_path / 'edalle.db', bot_data_dir  # shared: tiny weights and JAX's compile cache are made once
    imagine = enqueue(
        db, imagine_op.request(user_id=1, guild_id=1, channel_id=2, prompt='a red lighthouse', n=2, seed=7, preset='tiny')
    )
    command = [sys.executable, '-m', 'edalle.worker', '--db', str(db), '--data-dir', str(data), '--preset', 'tiny']
    log = open(tmp_path / 'worker.out', 'ab')  # noqa: SIM115
    worker = subprocess.Popen(
        [*command, '--max-jobs', '3', '--batch', '2'], stdout=log, stderr=subprocess.STDOUT, env=os.environ
    )
    log.close()
    try:
        row = wait_until(
            lambda: (r := job_row(db, imagine))['status'] not in ('queued', 'running') and r, timeout=400, interval=0.5
        )
        assert row['status'] == 'succeeded', (row['error'], (tmp_path / 'worker.out').read_text()[-3000:])
        result = json.loads(row['result'])
        candidates = result['pictures']
        assert [c['index'] for c in candidates] == [0, 1] and candidates[0]['score'] >= candidates[1]['score']
        for c in candidates:
            assert (data / c['path']).is_file() and len(c['tokens']) == 16 and len(c['tokens'][0]) == 16
        assert (data / result['grid']).is_file() and result['prompt'] == 'a red lighthouse'

        expand = enqueue(
            db,
            expand_op.request(
                user_id=1, guild_id=1, channel_id=2, parent_job_id=imagine, parent_index=0, steps=2, preset='tiny'
            ),
        )
        row = wait_until(
            lambda: (r := job_row(db, expand))['status'] not in ('queued', 'running') and r, timeout=400, interval=0.5
        )
        assert row['status'] == 'succeeded', (row['error'], (tmp_path / 'worker.out').read_text()[-3000:])
        # any result is a parent: the widened picture (448×256, 7:4) widened again, to a ratio that adds to it
        again = enqueue(
            db,
            expand_op.request(
                user_id=1, guild_id=1, channel_id=2, parent_job_id=expand, parent_index=0, ratio='21:9', steps=2,
                width=448, height=256, preset='tiny',
            ),
        )  # fmt: skip
        assert worker.wait(400) == 0, (tmp_path / 'worker.out').read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    row = job_row(db, expand)
    assert row['status'] == 'succeeded', (row['error'], (tmp_path / 'worker.out').read_text()[-3000:])
    result = json.loads(row['result'])
    (picture,) = result['pictures']
    with Image.open(data / picture['path']) as image:
        assert image.size == (picture['width'], picture['height']) == (448, 256)
    assert result['parent_job_id'] == imagine and result['prompt'] == 'a red lighthouse'
    row = job_row(db, again)
    assert row['status'] == 'succeeded', (row['error'], (tmp_path / 'worker.out').read_text()[-3000:])
    result = json.loads(row['result'])
    assert result['prompt'] == 'a red lighthouse'  # the prompt follows the chain
    assert [(p['width'], p['height']) for p in result['pictures']] == [(608, 256)]
    assert (data / result['media']['timelapse']).is_file()  # every optimising result has its time-lapse

    async def chain() -> str:
        store = await SqliteJobStore.open(db)
        try:
            return await lineage_text(store, await store.get(again), 0)
        finally:
            await store.close()

    assert asyncio.run(chain()) == f'imagine #{imagine} → pick 1 → expand 16:9 #{expand} → expand 21:9 #{again}'
