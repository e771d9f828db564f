"""Canvas builders: sizes, where the source sits, which cells are free, decode windows, refusals past the limit.

Pure Python and numpy: no model runs here (the runs are in test_expander_canvas_runs.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from edalle.expander.canvas import (
    Canvas,
    CanvasError,
    canvas_for_dream,
    canvas_for_pan,
    canvas_for_ratio,
    canvas_for_refine,
    canvas_for_region,
    canvas_for_square,
    canvas_for_zoom,
    canvas_from_geometry,
    rects_from_mask,
    zoom_shrink,
)
from edalle.expander.errors import ExpandError
from edalle.expander.geometry import compute_geometry


def _kept(canvas: Canvas) -> np.ndarray:
    """(rows, columns) bool: the source's cells."""
    mask = np.zeros(canvas.tokens, dtype=bool)
    top, left, bottom, right = canvas.source
    mask[top:bottom, left:right] = True
    return mask


@pytest.mark.parametrize('ratio', ['16:9', '9:16', '21:9', '4:3', '3:1', '1:3'])
def test_ratio_canvas_is_the_geometry_it_always_was(ratio: str) -> None:
    geometry = compute_geometry(ratio)
    canvas = canvas_for_ratio((256, 256), ratio)
    assert canvas.tokens == geometry.tokens and canvas.size == geometry.size
    assert canvas.source_box == geometry.source_box and canvas.geometry == geometry
    assert canvas.mode == 'extend' and canvas.kind == 'expand' and canvas.stage == 'expand'
    assert len(canvas.free) == 2  # the two side bands, before then after
    assert (canvas.free_mask() == ~_kept(canvas)).all()
    assert canvas_from_geometry(geometry) == canvas
    assert canvas.describe()['tokens'] == list(geometry.tokens)


def test_ratio_on_a_wide_source() -> None:
    canvas = canvas_for_ratio((448, 256), '1:1')  # a widened picture back to square by the ratio rule
    assert canvas.size == (448, 448) and canvas.source_box == (0, 96, 448, 352)


@pytest.mark.parametrize(('factor', 'side', 'ring'), [(1.5, 24, 4), (2.0, 32, 8), (2, 32, 8)])
def test_zoom_puts_the_source_in_the_middle_with_a_ring(factor: float, side: int, ring: int) -> None:
    canvas = canvas_for_zoom((256, 256), factor)
    assert canvas.tokens == (side, side) and canvas.source == (ring, ring, ring + 16, ring + 16)
    assert canvas.source_scale == 1.0 and canvas.source_px == (256, 256)
    assert canvas.sides == ('left', 'right', 'top', 'bottom')
    assert (canvas.free_mask() == ~_kept(canvas)).all()
    assert [r for r in canvas.free] == [  # top, left, right, bottom bands
        (0, 0, ring, side),
        (ring, 0, ring + 16, ring),
        (ring, ring + 16, ring + 16, side),
        (ring + 16, 0, side, side),
    ]
    assert canvas.decode_windows(4) == ((0, 0, side, side),)  # whole: no joins at the corners


def test_zoom_at_the_limit_scales_the_source_down() -> None:
    canvas = canvas_for_zoom((1024, 1024), 2.0, max_canvas_px=1024)
    assert canvas.size == (1024, 1024)  # chained zooms keep the size
    assert canvas.source_px == (512, 512) and canvas.source_scale == 0.5
    assert canvas.source == (16, 16, 48, 48)
    assert zoom_shrink((1024, 1024), 2.0, 1024) == ((512, 512), 0.5)
    assert zoom_shrink((256, 256), 2.0, 1024) == ((256, 256), 1.0)
    wide = canvas_for_zoom((768, 384), 2.0, max_canvas_px=1024)  # 1536 × 768 would pass the limit
    assert wide.size == (1024, 512) and wide.source_px == (512, 256)
    assert canvas_for_zoom((512, 512), 1.5, 1024).size == (768, 768)  # fits: not scaled
    assert canvas_for_zoom((1024, 1024), 1.5, 1024).size == (1024, 1024)
    with pytest.raises(CanvasError, match='between 1.25 and 4'):
        canvas_for_zoom((256, 256), 10)


def test_pan_adds_half_the_short_side() -> None:
    right = canvas_for_pan((256, 256), 'right')
    assert right.tokens == (16, 24) and right.source == (0, 0, 16, 16) and right.free == ((0, 16, 16, 24),)
    again = canvas_for_pan(right.size, 'right')
    assert again.size == (512, 256) and again.source == (0, 0, 16, 24)
    left = canvas_for_pan((256, 256), 'left')
    assert left.source == (0, 8, 16, 24) and left.free == ((0, 0, 16, 8),)
    up, down = canvas_for_pan((448, 256), 'up'), canvas_for_pan((448, 256), 'down')
    assert up.size == down.size == (448, 384)
    assert up.source == (8, 0, 24, 28) and down.source == (0, 0, 16, 28)
    with pytest.raises(CanvasError, match='left, right, up or down'):
        canvas_for_pan((256, 256), 'sideways')


def test_pan_decodes_one_window_whatever_the_width() -> None:
    narrow, wide = canvas_for_pan((256, 256), 'right'), canvas_for_pan((768, 256), 'right')
    assert narrow.decode_windows(4) == ((0, 12, 16, 24),)  # 8 new columns + 4 of context
    assert wide.decode_windows(4) == ((0, 44, 16, 56),)
    assert narrow.decoded_tokens(4) == wide.decoded_tokens(4) == 16 * 12
    assert narrow.view_box() is None  # the band and one short side of context: the whole 384 × 256
    assert wide.view_box() == (896 - 128 - 256, 0, 896, 256)
    up = canvas_for_pan((256, 256), 'up')
    assert up.decode_windows(4) == ((0, 0, 12, 16),) and up.vertical_only


def test_ratio_decodes_two_side_windows() -> None:
    canvas = canvas_for_ratio((256, 256), '16:9')
    assert canvas.decode_windows(4) == ((0, 0, 16, 10), (0, 18, 16, 28))
    assert canvas.decode_windows(0) == ((0, 0, 16, 28),)
    assert canvas_for_ratio((256, 256), '9:16').decode_windows(4) == ((0, 0, 10, 16), (18, 0, 28, 16))


def test_square_grows_the_short_side() -> None:
    canvas = canvas_for_square((448, 256))
    assert canvas.size == (448, 448) and canvas.source == (6, 0, 22, 28)
    assert canvas.free == ((0, 0, 6, 28), (22, 0, 28, 28)) and canvas.vertical_only
    odd = canvas_for_square((256, 304))  # 16 columns, 19 rows: 3 new columns, 1 before and 2 after
    assert odd.tokens == (19, 19) and odd.source == (0, 1, 19, 17)
    assert odd.decode_windows(4) == ((0, 0, 19, 5), (0, 13, 19, 19))
    with pytest.raises(CanvasError, match='already square'):
        canvas_for_square((256, 256))


def test_limits_are_refused_naming_the_largest_allowed() -> None:
    with pytest.raises(CanvasError, match='largest allowed is 1024 px'):
        canvas_for_pan((1024, 256), 'right')
    with pytest.raises(CanvasError, match='largest allowed is 512 px'):
        canvas_for_ratio((256, 256), '3:1', max_canvas_px=512)
    with pytest.raises(ExpandError, match='largest allowed is 992 px'):
        canvas_for_square((1024, 512), max_canvas_px=1000)  # the limit rounds down to whole tokens
    with pytest.raises(CanvasError, match='largest allowed'):
        canvas_for_dream('3:1', max_canvas_px=512)
    assert canvas_for_pan((768, 256), 'right', 1024).size == (896, 256)


def test_sources_must_be_whole_tokens() -> None:
    with pytest.raises(CanvasError, match='whole 16-px tokens'):
        canvas_for_pan((300, 256), 'right')


def test_region_canvas() -> None:
    canvas = canvas_for_region((256, 256), 'B2:C3')
    assert canvas.mode == 'repaint' and canvas.source == (0, 0, 16, 16)
    assert canvas.free == ((4, 4, 12, 12),)
    assert canvas.decode_windows(4) == ((0, 0, 16, 16),)
    assert canvas.focus_box() == (64, 64, 192, 192)
    small = canvas_for_region((448, 256), 'A1')
    assert small.free == ((0, 0, 4, 4),) and small.decode_windows(4) == ((0, 0, 8, 8),)
    assert canvas_for_region((256, 256), 'A1,D4').free == ((0, 0, 4, 4), (12, 12, 16, 16))


def test_dream_and_refine() -> None:
    square, wide, tall = canvas_for_dream(), canvas_for_dream('16:9'), canvas_for_dream('9:16')
    assert square.size == (256, 256) and wide.size == (448, 256) and tall.size == (256, 448)
    assert square.mode == 'dream' and square.source is None and square.free == ((0, 0, 16, 16),)
    assert square.decode_windows(4) == ((0, 0, 16, 16),)
    assert canvas_for_dream('1:1', short_px=512).size == (512, 512)
    assert square.resolve_init('auto') == 'random' and square.resolve_init('grey') == 'grey'
    with pytest.raises(CanvasError, match='random, grey, noise'):
        square.resolve_init('refine')  # nothing to refine
    refine = canvas_for_refine((448, 256))
    assert refine.mode == 'dream' and refine.resolve_init(None) == 'refine'
    assert canvas_for_region((256, 256), 'A1').resolve_init('auto') == 'edit'
    with pytest.raises(CanvasError, match='edit, remove'):
        canvas_for_region((256, 256), 'A1').resolve_init('random')


def test_rects_from_mask_covers_exactly() -> None:
    rng = np.random.RandomState(0)
    for _ in range(20):
        mask = rng.rand(7, 9) < 0.4
        rects = rects_from_mask(mask)
        painted = np.zeros_like(mask, dtype=int)
        for top, left, bottom, right in rects:
            painted[top:bottom, left:right] += 1
        assert (painted == mask).all()  # every True cell once, no False cell


def test_transposed_round_trip() -> None:
    for canvas in (canvas_for_ratio((256, 256), '9:16'), canvas_for_pan((256, 256), 'down'), canvas_for_zoom((256, 256), 2)):
        assert canvas.transposed().transposed() == canvas
        assert (canvas.transposed().free_mask() == canvas.free_mask().T).all()
