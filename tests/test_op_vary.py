"""vary as an operation: its request and checks, its batching key, the variations themselves (tiny preset: real
architectures, random weights) and its runner. The Discord path is in test_bot_e2e.py.

What random weights can show: the kept rows are token-identical to the pick, and so are the pixels above the
one-token feather band; keeping a pick's own rows with its own seed draws the pick again; a new seed redraws
the rest; each seed is deterministic; the forced rows filled in one parallel pass give the tokens of
step-by-step forcing; and the ranking is the order an independent CLIP computation gives.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edalle import errors
from edalle.jobs import Job, JobStatus, Limits, SqliteJobStore, WorkerCaps
from edalle.operations import imagine, vary
from edalle.operations.base import RequestError, WorkItem, pictures_of
from edalle.operations.imagine import ImagineRequest, Knobs
from edalle.operations.token_grid import tokens_of
from edalle.operations.vary import OPERATION, SIMILARITY_WEIGHT, VaryRequest, sample_requests
from edalle.outputs import RunFolder, save_png

FEATHER_PX = 16  # the redrawn rows blend into the pick over one token above them


def vary_request(**fields: Any) -> Any:
    values = dict(user_id=1, guild_id=2, channel_id=3, parent_job_id=12, parent_index=2, width=256, height=256)
    return vary.request(**{**values, 'preset': 'tiny', **fields})


def test_a_request_names_its_picture_and_batches_by_kept_rows_and_count() -> None:
    subtle, strong = vary_request(), vary_request(strength='strong', n=4)
    assert (subtle.kind, subtle.parent_job_id, subtle.parent_index) == ('vary', 12, 2)
    assert subtle.payload['strength'] == 'subtle' and subtle.payload['prompt'] is None
    assert subtle.compat_key == 'vary:tiny:12:9' and strong.compat_key == 'vary:tiny:4:4'
    assert subtle.compat_key.startswith(OPERATION.compat_prefix('tiny'))
    assert OPERATION.label(strong.payload) == 'vary (strong)' and OPERATION.label(subtle.payload) == 'vary (subtle)'
    assert OPERATION.bucket == 'daily_imagines' and OPERATION.compute == 'sampling' and OPERATION.batchable
    assert OPERATION.takes_picture and OPERATION.owner_only


@pytest.mark.parametrize(
    ('fields', 'refusal', 'words'),
    [
        ({'strength': 'medium'}, RequestError, 'Choose subtle'),
        ({'width': 448}, RequestError, 'I can vary only 256×256 pictures .*this one is 448×256'),
        ({'width': None}, RequestError, 'size is missing'),
        ({'n': 12}, errors.RequestTooLarge, 'at most 9 candidates'),
        ({'n': 0}, RequestError, 'between 1 and 16'),
        ({'seed': -3}, RequestError, 'seed must be a whole number'),
        ({'prompt': 'x' * 1001}, RequestError, 'at most 1000 characters'),
    ],
)
def test_bad_requests_are_refused_at_admission_in_words_for_the_member(fields, refusal, words) -> None:
    with pytest.raises(refusal, match=words):
        OPERATION.check(vary_request(**fields).payload, Limits())


def test_fit_asks_for_no_more_variations_than_allowed() -> None:
    payload = vary_request().payload
    assert OPERATION.fit(payload, Limits(candidates_per_imagine=4)) == {**payload, 'n': 4}
    assert OPERATION.fit(payload, Limits()) is payload


def test_it_starts_from_a_picture_of_the_members_own_and_counts_as_an_imagine(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteJobStore.open(tmp_path / 'edalle.db')
        try:
            await store.set_limit(0, 'cooldown_seconds', 0, actor_id=None)
            await store.enqueue(imagine.request(user_id=1, guild_id=10, channel_id=20, prompt='a', n=2, preset='tiny'))
            (job,) = await store.claim('w', WorkerCaps(('imagine:tiny:',)), 30)
            pictures = [{'index': i, 'path': f'{i}.png'} for i in (0, 1)]
            await store.complete(job.lease, {'pictures': pictures}, 1.0)

            def of(user: int, index: int = 1) -> Any:
                return vary_request(user_id=user, guild_id=10, channel_id=20, parent_job_id=job.id, parent_index=index)

            with pytest.raises(errors.InvalidParent, match='belongs to someone else'):
                await store.enqueue(of(2))
            with pytest.raises(errors.InvalidParent, match='no candidate 3'):
                await store.enqueue(of(1, 2))
            admitted = await store.enqueue(of(1))
            assert admitted.job.kind == 'vary' and admitted.quota.imagines_used == 2 and admitted.quota.edits_used == 0
        finally:
            await store.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------------- the variations (tiny engine)


@pytest.fixture(scope='module')
def pick(tiny_engine: Any) -> Any:
    (grid,) = tiny_engine.imagine([ImagineRequest('a red fox in the snow', n=4, seed=100)])
    return grid.candidates[1]


@pytest.fixture(scope='module')
def nine(tiny_engine: Any, pick: Any) -> Any:
    request = VaryRequest(pick.tokens, pick.image, 'a red fox in the snow', 'subtle', n=9, seed=5)
    (result,) = vary.vary(tiny_engine, [request])
    return request, result


@pytest.mark.slow
def test_kept_rows_and_the_pixels_above_them_are_the_picks_and_a_new_seed_redraws_the_rest(pick, nine) -> None:
    _, result = nine
    assert len(result.candidates) == 9 and sorted(c.seed for c in result.candidates) == list(range(5, 14))
    kept = vary.STRENGTHS['subtle']
    for candidate in result.candidates:
        np.testing.assert_array_equal(candidate.tokens[:kept], pick.tokens[:kept])  # token-identical
        assert (candidate.tokens[kept:] != pick.tokens[kept:]).any()  # a new seed changes a later row
        above = (kept * 16) - FEATHER_PX
        assert np.array_equal(np.asarray(candidate.image)[:above], np.asarray(pick.image)[:above])
        assert candidate.image.size == (256, 256)
    assert result.kept_rows == 12 and result.strength == 'subtle'
    scores = [c.score for c in result.candidates]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.slow
@pytest.mark.parametrize('strength', ['subtle', 'strong'])
def test_the_picks_own_rows_with_its_own_seed_draw_the_pick_again(tiny_engine, pick, strength) -> None:
    request = VaryRequest(pick.tokens, pick.image, 'a red fox in the snow', strength, n=1, seed=pick.seed)
    (result,) = vary.vary(tiny_engine, [request])
    np.testing.assert_array_equal(result.candidates[0].tokens, pick.tokens)


@pytest.mark.slow
def test_each_seed_is_deterministic_and_the_block_prefill_equals_step_by_step_decoding(tiny_engine, nine) -> None:
    request, result = nine
    (again,) = vary.vary(tiny_engine, [request])
    for a, b in zip(result.candidates, again.candidates, strict=True):
        assert a.seed == b.seed and np.array_equal(a.tokens, b.tokens)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    by_seed = {c.seed: c.tokens.reshape(-1) for c in result.candidates}
    stepped = tiny_engine.sample(sample_requests(tiny_engine, [request], [5]), prefill=False).tokens[0]
    for j, tokens in enumerate(stepped):  # every row decoded one step at a time, the forced rows included
        np.testing.assert_array_equal(tokens, by_seed[5 + j])


def independent_scores(clip: Any, images: list[Any], prompt: str, pick_image: Any) -> np.ndarray:
    """The ranking recomputed outside the engine: open_clip's own towers on pixels resized here, in float64."""
    import open_clip

    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)

    def embed(pictures: list[Any]) -> np.ndarray:
        x = torch.from_numpy(np.stack([np.asarray(p, np.float32) / 255 for p in pictures])).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(clip.image_size, clip.image_size), mode='bicubic', align_corners=False, antialias=True)
        with torch.no_grad():
            e = clip.model.encode_image((x - mean) / std).double().numpy()
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    with torch.no_grad():
        text = clip.model.encode_text(clip.tokenizer([prompt])).double().numpy()
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    shown, reference = embed(images), embed([pick_image])
    return 100 * (shown @ text.T)[:, 0] + SIMILARITY_WEIGHT * 100 * (shown @ reference.T)[:, 0]


@pytest.mark.slow
def test_the_ranking_is_the_prompt_plus_likeness_to_the_pick_by_an_independent_clip(tiny_engine, pick, nine) -> None:
    _, result = nine
    images = [c.image for c in result.candidates]
    want = independent_scores(tiny_engine.clip, images, result.normalized_prompt.strip(), pick.image)
    np.testing.assert_allclose([c.score for c in result.candidates], want, rtol=0, atol=2e-3)
    assert all(a >= b - 4e-3 for a, b in zip(want, want[1:], strict=False))  # best first, up to float ties
    assert want[0] > want[-1]
    parts = np.asarray(result.prompt_scores) + SIMILARITY_WEIGHT * np.asarray(result.similarities)
    np.testing.assert_allclose(parts, [c.score for c in result.candidates], rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------- the runner


def job(job_id: int, **fields: Any) -> Job:
    values = {name: None for name in Job.__slots__}  # type: ignore[attr-defined]
    values.update(id=job_id, kind='vary', status=JobStatus.RUNNING, user_id=1, attempt=1, compat_key='vary:tiny:12:2')
    values.update(cancel_requested=False, **fields)
    return Job(**values)


@pytest.mark.slow
def test_the_runner_varies_each_item_and_fails_a_bad_one_alone(tiny_engine, pick, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / 'images' / '4'
    folder.mkdir(parents=True)
    save_png(pick.image, folder / 'pick.png')
    Image.new('RGB', (448, 256), (10, 120, 200)).save(folder / 'wide.png')
    knobs = Knobs(temperature=0.9, top_k=20).to_json()
    parent = job(
        4, kind='imagine', status=JobStatus.SUCCEEDED, payload={'prompt': 'a red fox in the snow'},
        result={'pictures': [
            {'index': 0, 'path': 'images/4/pick.png', 'tokens': pick.tokens.tolist(), 'seed': pick.seed, 'knobs': knobs},
            {'index': 1, 'path': 'images/4/pick.png'},  # no tokens: the VQGAN encodes it
            {'index': 2, 'path': 'images/4/wide.png', 'width': 448, 'height': 256},
        ]},
    )  # fmt: skip

    def item(job_id: int, index: int, **payload: Any) -> WorkItem:
        fields = {'strength': 'subtle', 'n': 2, 'seed': 40, 'preset': 'tiny', **payload}
        return WorkItem(
            job(job_id, payload=fields, parent_job_id=4, parent_index=index), RunFolder(tmp_path, job_id, 1), parent
        )

    stages: list[str] = []
    ctx = SimpleNamespace(
        progress=lambda stage, done, total, preview=None: stages.append(stage),
        should_cancel=lambda: False,
        check_cancel=lambda: None,
    )
    items = [item(7, 0), item(8, 1, strength='strong', prompt='a blue fox'), item(9, 2)]
    good, encoded, wide = OPERATION.run(tiny_engine, items, ctx)
    assert isinstance(wide, errors.RunFailed) and 'only 256×256' in str(wide)
    assert {'encode', 'sample', 'decode', 'rank'} <= set(stages)

    pictures = pictures_of(good)
    assert [p.index for p in pictures] == [0, 1] and sorted(p.seed for p in pictures) == [40, 41]
    assert all(p.knobs == knobs and (tmp_path / p.path).is_file() for p in pictures)  # the pick's knobs, recorded
    assert all(np.array_equal(np.asarray(p.tokens)[:12], pick.tokens[:12]) for p in pictures)
    manifest = json.loads((tmp_path / good['manifest']).read_text())
    assert manifest['kind'] == 'vary' and manifest['strength'] == 'subtle' and manifest['knobs'] == knobs
    assert (tmp_path / good['grid']).is_file() and good['prompt'] == 'a red fox in the snow'
    assert set(good['ranking']) == {'prompt_scores', 'similarities', 'similarity_weight'}

    grid = tokens_of(tiny_engine, None, pick.image)  # a picture without tokens: the VQGAN's encoding is kept
    assert encoded['prompt'] == 'a blue fox' and encoded['strength'] == 'strong'
    assert all(np.array_equal(np.asarray(p.tokens)[:4], grid[:4]) for p in pictures_of(encoded))


@pytest.mark.slow
def test_the_prompt_part_of_the_ranking_is_what_imagine_ranks_by_negative_included(tiny_engine, nine, pick) -> None:
    from edalle.operations.token_grid import pixels_of

    _, result = nine
    pixels = pixels_of([*(c.image for c in result.candidates), pick.image])
    for negative in ('', 'a blurry photo'):
        prompt_scores, similarities = vary.ranking_scores(tiny_engine.clip, pixels, 'a red fox', negative)
        want = tiny_engine.rank(pixels[:-1], 'a red fox', negative)
        np.testing.assert_allclose(prompt_scores, want, rtol=0, atol=1e-3)
    assert similarities.shape == (9,) and (similarities <= 100 + 1e-3).all()
