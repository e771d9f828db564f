"""Target geometry: the ratio table, and the original's geometry bugs, fixed."""

from __future__ import annotations

import pytest

from edalle.expander.errors import ExpandError, RatioError
from edalle.expander.geometry import compute_geometry, parse_ratio


@pytest.mark.parametrize(
    ('ratio', 'size', 'tokens', 'offset'),
    [
        ('16:9', (448, 256), (16, 28), (0, 6)),  # the original's 16:9
        ('9:16', (256, 448), (28, 16), (6, 0)),
        ('21:9', (608, 256), (16, 38), (0, 11)),
        ('4:3', (352, 256), (16, 22), (0, 3)),
        ('3:4', (256, 352), (22, 16), (3, 0)),
        ('3:2', (384, 256), (16, 24), (0, 4)),
        ('2:1', (512, 256), (16, 32), (0, 8)),
        ('1:2', (256, 512), (32, 16), (8, 0)),
        ('3:1', (768, 256), (16, 48), (0, 16)),
        ('1:3', (256, 768), (48, 16), (16, 0)),
        ('5:4', (320, 256), (16, 20), (0, 2)),
        ('2.39:1', (608, 256), (16, 38), (0, 11)),
        ('16x9', (448, 256), (16, 28), (0, 6)),
    ],
)
def test_geometry_table(ratio: str, size: tuple[int, int], tokens: tuple[int, int], offset: tuple[int, int]) -> None:
    geometry = compute_geometry(ratio)
    assert geometry.size == size
    assert geometry.tokens == tokens
    assert geometry.offset == offset
    left, top, right, bottom = geometry.source_box
    assert (right - left, bottom - top) == (256, 256)
    # centred: as many new tokens before the source as after it
    assert geometry.tokens[1] - geometry.offset[1] - 16 == geometry.offset[1] or geometry.orientation == 'tall'
    assert geometry.tokens[0] - geometry.offset[0] - 16 == geometry.offset[0] or geometry.orientation == 'wide'


def test_tall_is_the_transpose_of_wide() -> None:
    """The original's tall branch crashed (NameError) or froze the wrong rows."""
    wide, tall = compute_geometry('16:9'), compute_geometry('9:16')
    assert tall.orientation == 'tall' and wide.orientation == 'wide'
    assert tall.transposed() == wide
    assert tall.axis == 2 and wide.axis == 3


@pytest.mark.parametrize('ratio', ['16:9 (taller)', '2:1 (tallest)', '16:9 (wider)'])
def test_menu_labels_are_not_silently_misread(ratio: str) -> None:
    """The original stripped non-digits, so '16:9 (taller)' became a wide 16:9."""
    with pytest.raises(RatioError, match='16:9, 9:16'):
        compute_geometry(ratio)


@pytest.mark.parametrize('ratio', ['', 'wide', '16', '16:', ':9', '16:9:1', 'a:b', '-16:9'])
def test_unparseable_ratio_is_an_error_not_a_silent_no_op(ratio: str) -> None:
    with pytest.raises(RatioError, match='width:height'):
        compute_geometry(ratio)


@pytest.mark.parametrize('ratio', ['1:1', '17:16', '16:17', '100:99'])
def test_ratio_that_adds_nothing(ratio: str) -> None:
    with pytest.raises(RatioError, match='too close'):
        compute_geometry(ratio)


@pytest.mark.parametrize('ratio', ['4:1', '1:4', '31:10'])
def test_out_of_range(ratio: str) -> None:
    with pytest.raises(RatioError, match='between 1:3'):
        compute_geometry(ratio)


def test_zero_side_and_error_type() -> None:
    with pytest.raises(ExpandError, match='above zero'):
        compute_geometry('0:9')
    assert parse_ratio(' 16 : 9 ') == (16.0, 9.0, '16:9')
