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
from edalle.operations.imagine import ImagineRequest

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
        + ['--preset', 'tiny', '-n', '9', '--seed', '11', '--out', str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / 'manifest.json').read_text())
    assert [c['file'] for c in manifest['candidates']] == [f'candidate-{i}.png' for i in range(1, 10)]
    assert all((out / c['file']).is_file() for c in manifest['candidates']) and (out / 'grid.png').is_file()
    assert set(manifest['timings']) >= {'text', 'sample', 'decode', 'rank', 'load'}
    (api,) = engine.imagine([ImagineRequest('a lighthouse in a storm', n=9, seed=11)])
    assert [c['tokens'] for c in manifest['candidates']] == [c.tokens.tolist() for c in api.candidates]
    assert manifest['prompt'] == 'a lighthouse in a storm' and manifest['seed'] == 11 and manifest['preset'] == 'tiny'
