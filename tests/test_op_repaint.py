"""repaint by tokens as an operation: regions (parsing, refusals), its request and checks, the repaint itself on the
tiny preset (tokens and pixels outside the region kept, the suffix score against teacher-forced logits), its
runner, and the bot's region helpers (typed regions, the cell select, the grid drawn on a picture).
The CLIP method is in test_op_repaint_clip.py, the Discord path in test_bot_e2e.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from bot.cogs.repaint import BadRegion, mask_hex, methods_for, region_of, split_words
from bot.utils.cell_grid import cell_names, overlay
from edalle import errors
from edalle.jobs import Job, JobStatus, Limits
from edalle.operations import repaint
from edalle.operations.base import Picture, RequestError, WorkItem, pictures_of
from edalle.operations.imagine import ImagineRequest
from edalle.operations.repaint import OPERATION, RepaintRequest, region_canvas, sample_requests, scored_positions
from edalle.outputs import RunFolder, save_png

FEATHER_PX = 16  # the repaint blends into the picture over one token around the region


def repaint_request(**fields: Any) -> Any:
    values = dict(user_id=1, guild_id=2, channel_id=3, parent_job_id=12, parent_index=0, width=256, height=256)
    return repaint.request(**{**values, 'region': 'b2:c3', 'prompt': 'a party hat', 'preset': 'tiny', **fields})


# ---------------------------------------------------------------------------------- regions and requests


def test_b2_c3_is_token_rows_4_to_11_and_columns_4_to_11() -> None:
    mask = region_canvas('B2:C3').free_mask()
    want = np.zeros((16, 16), bool)
    want[4:12, 4:12] = True
    np.testing.assert_array_equal(mask, want)
    pair = region_canvas('A1,B1').free_mask()
    assert pair[:4, :8].all() and pair.sum() == 32
    assert region_canvas('d4').free_mask()[12:, 12:].all() and region_canvas('C3:B2').label == 'C3:B2'


@pytest.mark.parametrize(
    ('region', 'words'),
    [
        ('A1:D4', 'the whole picture'),
        ('A1,B1,C1,D1,A2:D4', 'the whole picture'),
        ('', 'Name the cells to repaint'),
        ('E1', 'off this picture'),
        ('B2 and C3', 'is not a cell'),
    ],
)
def test_a_region_that_covers_everything_nothing_or_no_cell_is_refused_with_a_note(region, words) -> None:
    with pytest.raises(RequestError, match=words):
        OPERATION.check(repaint_request(region=region).payload, Limits())


def test_a_request_carries_its_region_and_batches_by_sample_count() -> None:
    request = repaint_request()
    assert request.kind == 'repaint' and request.payload['region'] == 'B2:C3' and request.payload['n'] == 4
    assert request.compat_key == 'repaint:tiny:4' and request.compat_key.startswith(OPERATION.compat_prefix('tiny'))
    assert OPERATION.label(request.payload) == 'repaint B2:C3'
    assert OPERATION.bucket == 'daily_imagines' and OPERATION.compute == 'sampling' and OPERATION.batchable
    OPERATION.check(request.payload, Limits())
    with pytest.raises(RequestError, match='CLIP method instead'):
        OPERATION.check(repaint_request(width=448).payload, Limits())
    with pytest.raises(RequestError, match='what the region should show'):
        OPERATION.check(repaint_request(prompt='  ').payload, Limits())


def test_the_scored_positions_are_the_kept_tokens_after_the_first_repainted_one() -> None:
    kept = ~region_canvas('B2').free_mask().reshape(-1)  # rows 4–7, columns 4–7 repainted
    scored = scored_positions(kept)
    assert not scored[: 4 * 16 + 4].any() and scored[4 * 16 + 8] and not scored[5 * 16 + 4]
    assert scored.sum() == kept[4 * 16 + 5 :].sum()
    assert not scored_positions(~region_canvas('A4:D4').free_mask().reshape(-1)).any()  # nothing kept after it


# ---------------------------------------------------------------------------------- the bot's region helpers


@pytest.mark.parametrize(
    ('words', 'parsed'),
    [
        ('B2:C3 a party hat', ('B2:C3', 'a party hat', None)),
        ('A1, B1 a red boat --method clip', ('A1,B1', 'a red boat', 'clip')),
        ('--method tokens D4 calm sea', ('D4', 'calm sea', 'tokens')),
        ('a1 - b2 a cloud', ('a1-b2', 'a cloud', None)),
    ],
)
def test_typed_repaints_split_into_region_prompt_and_method(words, parsed) -> None:
    assert split_words(words) == parsed


def test_a_typed_repaint_without_cells_says_how_to_write_one() -> None:
    with pytest.raises(BadRegion, match='Start with the cells'):
        split_words('a party hat')


def test_chosen_cells_become_a_region_and_a_mask_and_the_grid_grows_with_the_picture() -> None:
    assert region_of(['C3', 'B2', 'C2', 'B3']) == 'B2:C3' and region_of(['B2']) == 'B2'
    assert region_of(['D4', 'A1', 'B1']) == 'A1,B1,D4'
    names = cell_names((256, 256))
    assert names[:5] == ['A1', 'B1', 'C1', 'D1', 'A2'] and len(names) == 16 and names[-1] == 'D4'
    assert mask_hex(['A1', 'D4'], names) == '8001'
    wide = cell_names((448, 256))
    assert len(wide) == 28 and wide[6] == 'G1' and cell_names((256, 448))[-1] == 'D7'
    assert methods_for(Picture(0, 'x.png', 256, 256)) == ('tokens', 'clip')
    assert methods_for(Picture(0, 'x.png', 448, 256)) == ('clip',)


def test_the_grid_is_drawn_on_an_enlarged_copy_with_every_cell_named() -> None:
    picture = Image.new('RGB', (448, 256), (30, 90, 200))
    shown = overlay(picture)
    assert shown.size == (896, 512)
    pixels = np.asarray(shown)
    assert (pixels[:, 128] != (30, 90, 200)).any(axis=-1).all()  # a line down every column boundary
    assert (pixels[:48, :64] != (30, 90, 200)).any() and (pixels[80:120, 20:100] == (30, 90, 200)).all()  # A1's label
    assert overlay(Image.new('RGB', (1024, 256))).size == (1024, 256)  # never past 1024 px


# ---------------------------------------------------------------------------------- the repaint (tiny engine)


@pytest.fixture(scope='module')
def source(tiny_engine: Any) -> Any:
    (grid,) = tiny_engine.imagine([ImagineRequest('a pug on a sofa', n=2, seed=300)])
    return grid.candidates[0]


@pytest.fixture(scope='module')
def repainted(tiny_engine: Any, source: Any) -> Any:
    request = RepaintRequest(source.tokens, source.image, 'B2:C3', 'a party hat', seed=21)
    (result,) = repaint.repaint(tiny_engine, [request])
    return request, result


@pytest.mark.slow
def test_tokens_and_pixels_outside_the_region_and_its_band_are_the_sources(tiny_engine, source, repainted) -> None:
    from edalle.expander.seams import region_alpha

    request, result = repainted
    inside = region_canvas('B2:C3').free_mask()
    np.testing.assert_array_equal(result.tokens[~inside], source.tokens[~inside])
    assert (result.tokens[inside] != source.tokens[inside]).any()
    beyond = (region_alpha(region_canvas('B2:C3')) == 0).numpy()  # more than one token from the region
    assert beyond[: 64 - FEATHER_PX].all() and beyond[:, 192 + FEATHER_PX :].all() and not beyond[64:192, 64:192].any()
    result_px, source_px = np.asarray(result.image), np.asarray(source.image)
    assert np.array_equal(result_px[beyond], source_px[beyond])
    assert not np.array_equal(result_px[64:192, 64:192], source_px[64:192, 64:192])
    assert len(result.samples) == 4 and result.samples[0].seed == result.seed
    assert [s.score for s in result.samples] == sorted((s.score for s in result.samples), reverse=True)
    assert result.region == 'B2:C3' and result.cells == 'B2,C2,B3,C3'
    (again,) = repaint.repaint(tiny_engine, [request])  # deterministic per seed
    assert np.array_equal(np.asarray(again.image), result_px) and again.samples == result.samples


@pytest.mark.slow
def test_the_suffix_score_is_the_teacher_forced_log_likelihood_of_the_kept_tokens_after_the_region(
    tiny_engine, source, repainted
) -> None:
    from edalle.loading import load_bart
    from edalle.models.bart import encode, teacher_forced_logits

    request, result = repainted
    sampled = tiny_engine.sample(sample_requests(tiny_engine, [request], [21]))
    tokens, sums = sampled.tokens[0], sampled.suffix_scores[0]  # (4, 256), (4,)
    config, params = load_bart(tiny_engine.preset, tiny_engine.data_dir)
    prompt = tiny_engine.tokenizer.encode_prompt('a party hat').encoded
    ids = np.repeat(np.asarray(prompt.ids)[None], 4, axis=0)
    mask = np.repeat(np.asarray(prompt.attention_mask)[None], 4, axis=0)
    state = encode(params, config, ids, mask)
    start = np.full((4, 1), config.decoder_start_token_id, np.int32)
    logits = teacher_forced_logits(params, config, state, jnp.asarray(mask), np.concatenate([start, tokens[:, :-1]], 1))
    logits = np.asarray(logits[..., : tiny_engine.vqgan.codebook.shape[0]], np.float64)  # (4, 256, K), conditional
    logits -= logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]
    scored = scored_positions(~region_canvas('B2:C3').free_mask().reshape(-1))
    np.testing.assert_allclose(sums, (picked * scored).sum(axis=1), rtol=0, atol=1e-4)
    by_seed = {21 + j: total / scored.sum() for j, total in enumerate(sums)}  # what each sample was scored by
    assert all(s.likelihood == pytest.approx(by_seed[s.seed], abs=1e-9) for s in result.samples)


def job(job_id: int, **fields: Any) -> Job:
    values = {name: None for name in Job.__slots__}  # type: ignore[attr-defined]
    values.update(id=job_id, kind='repaint', status=JobStatus.RUNNING, user_id=1, attempt=1, compat_key='repaint:tiny:4')
    values.update(cancel_requested=False, **fields)
    return Job(**values)


@pytest.mark.slow
def test_the_runner_repaints_each_item_and_fails_a_bad_one_alone(tiny_engine, source, tmp_path: Path) -> None:
    folder = tmp_path / 'images' / '4'
    folder.mkdir(parents=True)
    save_png(source.image, folder / 'pick.png')
    Image.new('RGB', (448, 256), (10, 120, 200)).save(folder / 'wide.png')
    parent = job(
        4, kind='imagine', status=JobStatus.SUCCEEDED, payload={'prompt': 'a pug on a sofa'},
        result={'pictures': [
            {'index': 0, 'path': 'images/4/pick.png', 'tokens': source.tokens.tolist(), 'seed': source.seed},
            {'index': 1, 'path': 'images/4/wide.png', 'width': 448, 'height': 256},
        ]},
    )  # fmt: skip
    ctx = SimpleNamespace(progress=lambda *a: None, should_cancel=lambda: False, check_cancel=lambda: None)

    def item(job_id: int, index: int) -> WorkItem:
        payload = {'region': 'A1', 'prompt': 'a red balloon', 'n': 2, 'seed': 8, 'preset': 'tiny'}
        return WorkItem(
            job(job_id, payload=payload, parent_job_id=4, parent_index=index), RunFolder(tmp_path, job_id, 1), parent
        )

    done, wide = OPERATION.run(tiny_engine, [item(7, 0), item(8, 1)], ctx)
    assert isinstance(wide, errors.RunFailed) and 'only 256×256' in str(wide)
    (picture,) = pictures_of(done)
    assert (picture.width, picture.height) == (256, 256) and (tmp_path / picture.path).is_file()
    assert np.array_equal(np.asarray(picture.tokens)[4:], source.tokens[4:])  # A1 is rows 0–3, columns 0–3
    assert done['method'] == 'tokens' and done['region'] == 'A1' and len(done['samples']) == 2
    assert picture.seed == done['seed'] == done['samples'][0]['seed'] and done['prompt'] == 'a red balloon'
    with Image.open(tmp_path / picture.path) as image:
        assert np.array_equal(np.asarray(image)[96:], np.asarray(source.image)[96:])
