"""imagine as an operation: its request and checks, its batching key, and its runner's result (pictures on disk).

The engine itself is tested in test_engine.py (tiny preset); here the runner gets a stand-in engine that
returns a fixed `ImagineResult`, so what the operation adds (validation per item, files, the summary every
next operation reads) is checked without loading a model.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edalle.errors import RequestTooLarge, RunFailed
from edalle.jobs import Job, JobStatus, Limits
from edalle.operations import imagine
from edalle.operations.base import RequestError, WorkItem, pictures_of
from edalle.operations.imagine import OPERATION, Candidate, ImagineResult
from edalle.outputs import RunFolder


def test_a_request_carries_its_fields_and_a_key_per_preset_and_count() -> None:
    request = imagine.request(user_id=1, guild_id=2, channel_id=3, prompt='a fox', n=4, seed=7, preset='tiny')
    assert request.kind == 'imagine' and request.payload == {'prompt': 'a fox', 'n': 4, 'seed': 7, 'preset': 'tiny'}
    assert request.compat_key == 'imagine:tiny:4' and request.compat_key.startswith(OPERATION.compat_prefix('tiny'))
    assert request.parent_job_id is None and OPERATION.bucket == 'daily_imagines' and OPERATION.batchable


@pytest.mark.parametrize(
    ('payload', 'refusal', 'words'),
    [
        ({'prompt': 'a fox', 'n': 10}, RequestTooLarge, 'at most 9 candidates'),
        ({'prompt': '   ', 'n': 4}, RequestError, 'The prompt is empty'),
        ({'prompt': 'a fox', 'n': 0}, RequestError, 'between 1 and 16'),
        ({'prompt': 'a fox', 'n': 4, 'seed': -1}, RequestError, 'seed must be a whole number'),
        ({'prompt': 'a fox', 'n': 4, 'seed': 2**40}, RequestError, 'seed must be a whole number'),
    ],
)
def test_bad_requests_are_refused_at_admission_with_words_for_the_member(payload, refusal, words) -> None:
    with pytest.raises(refusal, match=words):
        OPERATION.check({**payload, 'preset': 'tiny'}, Limits())


def test_fit_asks_for_no_more_candidates_than_allowed_and_keeps_every_other_field() -> None:
    payload = {'prompt': 'a fox', 'n': 9, 'seed': 1, 'preset': 'tiny', 'knob': 0.5}
    assert OPERATION.fit(payload, Limits(candidates_per_imagine=4)) == {**payload, 'n': 4}
    assert OPERATION.fit(payload, Limits()) is payload


def job(job_id: int, **payload: Any) -> Job:
    values = {name: None for name in Job.__slots__}  # type: ignore[attr-defined]
    values.update(
        id=job_id,
        kind='imagine',
        status=JobStatus.RUNNING,
        user_id=1,
        payload={'preset': 'tiny', **payload},
        attempt=1,
        compat_key='imagine:tiny:2',
        cancel_requested=False,
    )
    return Job(**values)


class StandInEngine:
    """Returns two candidates per request, from the request's own seed, as `Engine.imagine` does."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def imagine(self, requests: list[Any], progress: Any = None, **options: Any) -> list[ImagineResult]:
        self.requests.extend(requests)
        results = []
        for request in requests:
            candidates = [
                Candidate(
                    i,
                    Image.new('RGB', (256, 256), (40 * i, 0, 0)),
                    np.full((16, 16), i, np.int32),
                    30.0 - i,
                    request.seed + i,
                )
                for i in range(request.n)
            ]
            results.append(ImagineResult(request.prompt, ' ' + request.prompt, False, 3, request.seed, candidates))
        return results


def test_the_runner_fails_a_bad_item_alone_and_writes_every_picture_the_next_operation_needs(tmp_path: Path) -> None:
    items = [
        WorkItem(job(1, prompt='a fox', n=2, seed=5), RunFolder(tmp_path, 1, 1)),
        WorkItem(job(2, prompt='', n=2, seed=5), RunFolder(tmp_path, 2, 1)),
    ]
    ctx = SimpleNamespace(progress=lambda *a: None, should_cancel=lambda: False, check_cancel=lambda: None)
    engine = StandInEngine()
    good, bad = OPERATION.run(engine, items, ctx)
    assert isinstance(bad, RunFailed) and 'prompt is empty' in str(bad)
    assert [r.prompt for r in engine.requests] == ['a fox']  # the bad one never reached the engine
    pictures = pictures_of(good)
    assert [p.index for p in pictures] == [0, 1] and [p.seed for p in pictures] == [5, 6]
    for picture in pictures:
        assert (tmp_path / picture.path).is_file() and (picture.width, picture.height) == (256, 256)
        assert np.array_equal(np.asarray(picture.tokens), np.full((16, 16), picture.index))
    assert (tmp_path / good['grid']).is_file() and (tmp_path / good['manifest']).is_file()
    assert good['prompt'] == 'a fox' and good['seed'] == 5


def test_results_written_before_pictures_were_one_list_still_read() -> None:
    legacy = {'candidates': [{'index': 1, 'path': 'b.png', 'score': 2.0}, {'index': 0, 'path': 'a.png', 'seed': 3}]}
    pictures = pictures_of(legacy)
    assert [(p.index, p.path, p.width, p.seed) for p in pictures] == [(0, 'a.png', 256, 3), (1, 'b.png', 256, None)]
