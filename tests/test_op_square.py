"""square as an operation: its request and checks (a square picture has nothing to add; the admins' limit), and its
runner on the tiny models (a widened picture made square, kept exact in the middle). The Discord path (the Make
square choice of the Zoom & pan… menu) is in test_bot_canvas.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from canvas_jobs import Context, item, parent, read_picture, tiny_engine

from edalle import errors
from edalle.jobs import Limits
from edalle.operations import square
from edalle.operations.base import RequestError, pictures_of
from edalle.operations.square import OPERATION


def test_a_request_carries_the_size_and_reads_as_make_square() -> None:
    request = square.request(user_id=1, guild_id=2, channel_id=3, parent_job_id=8, parent_index=0, width=448, height=256)
    assert (request.kind, request.payload['width'], request.payload['height']) == ('square', 448, 256)
    assert OPERATION.label(request.payload) == 'make square' and OPERATION.bucket == 'daily_edits'


def test_checks_refuse_a_square_picture_and_a_canvas_past_the_limit() -> None:
    OPERATION.check({'width': 448, 'height': 256}, Limits())
    with pytest.raises(RequestError, match='already square'):
        OPERATION.check({'width': 256, 'height': 256}, Limits())
    with pytest.raises(RequestError, match='largest allowed is 256 px'):
        OPERATION.check({'width': 448, 'height': 256, 'max_canvas_px': 256}, Limits(max_canvas_px=256))
    with pytest.raises(errors.RequestTooLarge, match='at most 10 optimisation steps'):
        OPERATION.check({'width': 448, 'height': 256, 'steps': 11}, Limits(expand_steps=10))


@pytest.mark.slow  # a short run of the tiny models
def test_the_runner_makes_a_wide_picture_square(tmp_path: Path) -> None:
    source = parent(tmp_path, (112, 64))
    engine, ctx = tiny_engine(), Context()
    (result,) = OPERATION.run(engine, [item(tmp_path, {'width': 112, 'height': 64, 'steps': 1}, 'square', source)], ctx)
    assert [(p.width, p.height) for p in pictures_of(result)] == [(112, 112)]
    assert np.array_equal(read_picture(tmp_path, result)[16:80], read_picture(tmp_path, source.result))  # 1 row above
    assert 'timelapse' in result['media'] and {stage for stage, *_ in ctx.reports} == {'square'}
