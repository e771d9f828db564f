"""dream as an operation: from a prompt alone (no picture: the store admits it without a parent) or refining a
picture; its checks (a prompt is needed, ratios from 1:3 to 3:1, the admins' limits, blocked words in the negative
prompt too), and its runner on the tiny models (the asked size, deterministic per seed, a time-lapse whose last frame
is the picture). The Discord path is in test_bot_canvas.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from canvas_jobs import Context, assert_timelapse_of, item, parent, read_picture, tiny_engine

from edalle import errors
from edalle.jobs import Limits, SqliteJobStore, WorkerCaps
from edalle.operations import dream, imagine
from edalle.operations.base import RequestError, pictures_of
from edalle.operations.dream import OPERATION


def test_a_request_dreams_from_words_or_refines_a_picture() -> None:
    alone = dream.request(user_id=1, guild_id=2, channel_id=3, prompt='a castle', negative_prompt='text', ratio='16:9',
                          init='grey', seed=4, preset='tiny')  # fmt: skip
    assert alone.parent_job_id is None and 'source_path' not in alone.payload and 'width' not in alone.payload
    assert (alone.payload['init'], alone.payload['ratio'], alone.compat_key) == ('grey', '16:9', 'dream:tiny')
    assert OPERATION.texts(alone.payload) == ['a castle', 'text']  # blocked words are checked in both
    refine = dream.request(user_id=1, guild_id=2, channel_id=3, prompt='a castle', parent_job_id=9, parent_index=2,
                           width=256, height=256)  # fmt: skip
    assert (refine.parent_job_id, refine.parent_index, refine.payload['init']) == (9, 2, 'refine')
    with pytest.raises(RequestError, match='leave out the way to start'):
        dream.request(user_id=1, guild_id=2, channel_id=3, prompt='x', parent_job_id=9, parent_index=0, init='grey')
    assert OPERATION.picture_optional and OPERATION.takes_picture and OPERATION.label(refine.payload) == 'dream'


def test_checks_want_a_prompt_a_ratio_it_can_make_and_the_limits() -> None:
    OPERATION.check({'prompt': 'a castle', 'ratio': '3:1', 'init': 'noise'}, Limits())
    OPERATION.check({'prompt': 'a castle', 'init': 'refine', 'width': 448, 'height': 256}, Limits())
    refusals = [
        ({'prompt': '  '}, Limits(), RequestError, 'starts from words'),
        ({'prompt': 'x', 'ratio': '4:1'}, Limits(), RequestError, 'from 1:3'),
        ({'prompt': 'x', 'init': 'mirror'}, Limits(), RequestError, 'random, grey, noise'),
        ({'prompt': 'x', 'init': 'refine'}, Limits(), RequestError, 'size is missing'),
        ({'prompt': 'x', 'init': 'refine', 'width': 64, 'height': 64, 'ratio': '2:1'}, Limits(), RequestError, 'its shape'),
        ({'prompt': 'x', 'ratio': '3:1'}, Limits(max_canvas_px=512), errors.RequestTooLarge, 'at most 512 px'),
        ({'prompt': 'x', 'ratio': '3:1', 'max_canvas_px': 512}, Limits(max_canvas_px=512), RequestError, '768×256'),
        ({'prompt': 'x', 'steps': 300}, Limits(), errors.RequestTooLarge, 'at most 200 optimisation steps'),
        ({'prompt': 'x', 'seed': -1}, Limits(), RequestError, 'seed'),
    ]  # fmt: skip
    for payload, limits, error, words in refusals:
        with pytest.raises(error, match=words):
            OPERATION.check(payload, limits)
    assert OPERATION.estimate_seconds({'prompt': 'x', 'ratio': '16:9', 'steps': 100}) > 0


def test_the_store_admits_a_dream_without_a_picture_and_checks_a_refined_one(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteJobStore.open(tmp_path / 'edalle.db')
        try:
            await store.set_limit(0, 'cooldown_seconds', 0, actor_id=None)
            await store.set_setting(10, 'blocked_words', ['gore'], actor_id=None)
            admitted = await store.enqueue(
                dream.request(user_id=1, guild_id=10, channel_id=20, prompt='a bay', preset='tiny')
            )
            assert admitted.job.kind == 'dream' and admitted.job.parent_job_id is None and admitted.quota.edits_used == 1
            with pytest.raises(errors.PromptRejected):
                await store.enqueue(
                    dream.request(
                        user_id=1, guild_id=10, channel_id=20, prompt='a bay', negative_prompt='GORE', preset='tiny'
                    )
                )
            await store.enqueue(imagine.request(user_id=2, guild_id=10, channel_id=20, prompt='a', n=1, preset='tiny'))
            (grid,) = await store.claim('w', WorkerCaps(('imagine:tiny:',)), 30)
            await store.complete(grid.lease, {'pictures': [{'index': 0, 'path': 'a.png'}]}, 1.0)
            theirs = dream.request(user_id=1, guild_id=10, channel_id=20, prompt='a bay', parent_job_id=grid.id,
                                   parent_index=0, width=256, height=256, preset='tiny')  # fmt: skip
            with pytest.raises(errors.InvalidParent, match='belongs to someone else'):
                await store.enqueue(theirs)
            assert (await store.quota(10, 1)).edits_used == 1
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.slow  # three short runs of the tiny models
def test_the_runner_dreams_the_asked_size_the_same_per_seed_and_refines_a_picture(tmp_path: Path) -> None:
    engine, ctx = tiny_engine(), Context()
    payload = {'prompt': 'a red fox', 'negative_prompt': 'text', 'ratio': '1:1', 'steps': 2, 'seed': 11, 'init': 'grey'}
    first, again = OPERATION.run(engine, [item(tmp_path, payload, 'dream'), item(tmp_path, payload, 'dream', job_id=8)], ctx)
    assert [(p.width, p.height, p.seed) for p in pictures_of(first)] == [(256, 256, 11)]
    assert np.array_equal(read_picture(tmp_path, first), read_picture(tmp_path, again))  # deterministic per seed
    assert first['prompt'] == 'a red fox' and first['negative_prompt'] == 'text' and first['parent_job_id'] is None
    assert first['settings']['init'] == 'grey' and first['settings']['canvas'] == 'dream'
    assert_timelapse_of(tmp_path, first, engine.results[0], steps=2, every=1)
    assert {stage for stage, *_ in ctx.reports} == {'dream'}

    source = parent(tmp_path, (64, 48), prompt='a lighthouse')
    refine = {'prompt': 'a lighthouse at night', 'init': 'refine', 'width': 64, 'height': 48, 'steps': 1}
    (refined,) = OPERATION.run(engine, [item(tmp_path, refine, 'dream', source, job_id=9)], ctx)
    assert [(p.width, p.height) for p in pictures_of(refined)] == [(64, 48)]
    assert refined['settings']['init'] == 'refine' and refined['parent_job_id'] == 4
    gone = item(tmp_path, refine, 'dream', parent(tmp_path, (64, 48)), job_id=10)
    (tmp_path / 'images' / '4' / 'p.png').unlink()
    (failed,) = OPERATION.run(engine, [gone], ctx)
    assert isinstance(failed, errors.RunFailed) and 'picture to dream from is gone' in str(failed)
