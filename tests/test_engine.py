"""The engine end to end on the tiny preset: real architectures, random weights, CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edalle.engine import Engine
from edalle.operations.base import RequestError
from edalle.operations.imagine import ImagineRequest, Knobs

LOADING: list[tuple[str, int, int]] = []  # what the module's engine reported while it loaded


@pytest.fixture(scope='module')
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine.load('tiny', tmp_path_factory.mktemp('data'), progress=lambda s, d, t, p=None: LOADING.append((s, d, t)))


def test_loading_reports_each_part_as_it_is_ready(engine: Engine) -> None:
    assert LOADING == [('load', done, 5) for done in range(6)]  # tokenizer, DalleBart, its sampler copy, VQGAN, CLIP


def test_imagine_ranks_candidates_best_first_and_is_reproducible(engine: Engine) -> None:
    stages: list[tuple[str, int, int]] = []
    (first,) = engine.imagine(
        [ImagineRequest('a lighthouse in a storm', n=9, seed=11)], progress=lambda s, d, t, p=None: stages.append((s, d, t))
    )
    (again,) = engine.imagine([ImagineRequest('a lighthouse in a storm', n=9, seed=11)])
    scores = [c.score for c in first.candidates]
    assert scores == sorted(scores, reverse=True)
    assert [c.index for c in first.candidates] == list(range(9))
    assert sorted(c.seed for c in first.candidates) == list(range(11, 20))
    assert all(c.image.size == (256, 256) and c.tokens.shape == (16, 16) for c in first.candidates)
    assert all(int(c.tokens.max()) < engine.vqgan.codebook.shape[0] for c in first.candidates)
    for a, b in zip(first.candidates, again.candidates, strict=True):
        assert np.array_equal(a.tokens, b.tokens) and a.seed == b.seed and a.score == pytest.approx(b.score, abs=1e-4)
    assert len({c.tokens.tobytes() for c in first.candidates}) == 9  # nine different drawings
    assert {s for s, _, _ in stages} == {'encode', 'sample', 'decode', 'rank'}
    assert ('sample', 256, 256) in stages and ('decode', 9, 9) in stages
    assert first.normalized_prompt == ' a lighthouse in a storm' and not first.truncated


def test_a_candidate_is_redrawn_alone_from_its_own_seed(engine: Engine) -> None:
    (grid,) = engine.imagine([ImagineRequest('a red fox', n=4, seed=100)])
    pick = grid.candidates[2]
    (alone,) = engine.imagine([ImagineRequest('a red fox', n=1, seed=pick.seed)])
    assert np.array_equal(alone.candidates[0].tokens, pick.tokens)


def test_several_prompts_in_one_call_match_separate_calls(engine: Engine) -> None:
    requests = [ImagineRequest('a red fox', n=4, seed=100), ImagineRequest('a blue whale', n=2, seed=5)]
    together = engine.imagine(requests)
    separate = [engine.imagine([r])[0] for r in requests]
    for joint, single in zip(together, separate, strict=True):
        assert [c.seed for c in joint.candidates] == [c.seed for c in single.candidates]
        assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(joint.candidates, single.candidates, strict=True))
    assert together[1].prompt == 'a blue whale' and len(together[1].candidates) == 2


def test_long_prompts_are_truncated_and_say_so(engine: Engine) -> None:
    (result,) = engine.imagine([ImagineRequest(' '.join(['castle'] * 80), n=1, seed=1)])
    assert result.truncated and result.token_count > 64


@pytest.mark.parametrize(
    'request_',
    [ImagineRequest('   '), ImagineRequest('cat', n=0), ImagineRequest('cat', n=17), ImagineRequest('cat', seed=-1)],
)
def test_bad_requests_are_refused_before_any_work(engine: Engine, request_: ImagineRequest) -> None:
    with pytest.raises(RequestError):
        engine.imagine([request_])


def test_cli_imagine_writes_ranked_files_grid_and_manifest(tmp_path: Path, engine: Engine) -> None:
    out = tmp_path / 'run'
    done = subprocess.run(
        [sys.executable, '-m', 'edalle.cli', '--data-dir', str(engine.data_dir), 'imagine', 'a lighthouse in a storm']
        + ['--preset', 'tiny', '-n', '9', '--seed', '11', '--out', str(out)]
        + ['--temperature', '0.8', '--top-k', '128', '--scale', '7', '--no', 'text, watermark'],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / 'manifest.json').read_text())
    assert [c['file'] for c in manifest['candidates']] == [f'candidate-{i}.png' for i in range(1, 10)]
    assert all((out / c['file']).is_file() for c in manifest['candidates']) and (out / 'grid.png').is_file()
    assert set(manifest['timings']) >= {'text', 'sample', 'decode', 'rank', 'load'}
    knobs = Knobs(temperature=0.8, top_k=128, cond_scale=7.0, negative='text, watermark')
    assert manifest['knobs'] == knobs.to_json()  # every knob recorded beside the candidates
    (api,) = engine.imagine([ImagineRequest('a lighthouse in a storm', n=9, seed=11, knobs=knobs)])
    assert [c['tokens'] for c in manifest['candidates']] == [c.tokens.tolist() for c in api.candidates]
    assert manifest['prompt'] == 'a lighthouse in a storm' and manifest['seed'] == 11 and manifest['preset'] == 'tiny'


def tokens_of(result) -> list[list[int]]:
    return [c.tokens.tolist() for c in sorted(result.candidates, key=lambda c: c.seed)]


def test_each_requests_knobs_reach_the_sampler_and_a_mixed_batch_equals_each_alone(engine: Engine) -> None:
    greedy = ImagineRequest('a red fox', n=3, seed=40, knobs=Knobs(top_k=1))
    (alone,) = engine.imagine([greedy])
    assert len({tuple(map(tuple, t)) for t in tokens_of(alone)}) == 1  # top-k 1: every seed draws the same grid
    blind = [ImagineRequest(p, n=1, seed=7, knobs=Knobs(cond_scale=0.0)) for p in ('a red fox', 'a blue whale')]
    fox, whale = engine.imagine(blind)
    assert tokens_of(fox) == tokens_of(whale)  # scale 0: the prompt no longer steers
    other = ImagineRequest('a blue whale', n=2, seed=3, knobs=Knobs(temperature=0.7, top_p=0.9, negative='rain'))
    together = engine.imagine([greedy, other])
    assert tokens_of(together[0]) == tokens_of(alone)
    assert tokens_of(together[1]) == tokens_of(engine.imagine([other])[0])
    assert together[1].knobs == other.knobs


def test_an_empty_negative_changes_nothing_and_a_negative_is_subtracted_when_ranking(engine: Engine) -> None:
    plain = ImagineRequest('a lighthouse', n=3, seed=5)
    (first,) = engine.imagine([plain])
    (empty,) = engine.imagine([ImagineRequest('a lighthouse', n=3, seed=5, knobs=Knobs(negative=''))])
    assert tokens_of(first) == tokens_of(empty)
    (avoided,) = engine.imagine([ImagineRequest('a lighthouse', n=3, seed=5, knobs=Knobs(negative='a dark storm'))])
    pixels = engine.decode(np.stack([c.tokens for c in avoided.candidates]))
    prompt, negative = engine.tokenizer.encode_prompt('a lighthouse'), engine.tokenizer.encode_prompt('a dark storm')
    expected = engine.clip.score(pixels, prompt.normalized.strip()) - engine.clip.score(pixels, negative.normalized)
    assert [c.score for c in avoided.candidates] == pytest.approx(expected.cpu().numpy().tolist(), abs=1e-4)


def test_previews_show_each_requests_grid_as_it_forms_and_change_nothing(engine: Engine) -> None:
    requests = [ImagineRequest('a red fox', n=4, seed=8), ImagineRequest('a blue whale', n=2, seed=9)]
    seen: list[tuple[int, dict]] = []

    def progress(stage, done, total, preview=None) -> None:
        if preview is not None:
            seen.append((done, preview))

    with_previews = engine.imagine(requests, progress=progress, previews=True)
    without = engine.imagine(requests)
    assert [tokens_of(r) for r in with_previews] == [tokens_of(r) for r in without]  # bit-identical tokens
    assert [done for done, _ in seen] == list(range(32, 257, 32))
    done, last = seen[-1]
    assert set(last) == {0, 1} and last[0].size != last[1].size  # a 2 × 2 grid and a 2 × 1 grid of 64-px pictures
    colours = engine.code_colours()
    assert colours.shape == (engine.vqgan.codebook.shape[0], 3)
    assert any((engine.data_dir / 'models').rglob('code-colours.npy'))  # kept beside the VQGAN's weights
