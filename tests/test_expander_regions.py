"""Region names on the cell grid: ranges, lists, wider and taller pictures, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

from edalle.expander.regions import RegionError, describe_region, grid_shape, parse_region, region_mask


def test_range_maps_to_token_rows_and_columns() -> None:
    cells = parse_region('B2:C3', (16, 16))
    assert cells == {(1, 1), (1, 2), (2, 1), (2, 2)}
    mask = np.array(region_mask(cells, (16, 16)))
    rows, columns = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (4, 11, 4, 11)
    assert mask.sum() == 64


def test_lists_corners_in_any_order_and_spacing() -> None:
    assert parse_region('A1,B1', (16, 16)) == {(0, 0), (0, 1)}
    assert parse_region(' c3 : b2 ', (16, 16)) == parse_region('B2:C3', (16, 16))
    assert parse_region('A1:B2, D4', (16, 16)) == {(0, 0), (0, 1), (1, 0), (1, 1), (3, 3)}
    assert describe_region(parse_region('d4,a1', (16, 16))) == 'A1,D4'


def test_wider_and_taller_pictures_get_more_cells() -> None:
    assert grid_shape((16, 28)) == (4, 7)  # 448 × 256: columns A–G
    assert parse_region('G4', (16, 28)) == {(3, 6)}
    assert grid_shape((22, 16)) == (6, 4)  # 256 × 352: 5½ rows of cells, the last one narrower
    mask = np.array(region_mask(parse_region('A6', (22, 16)), (22, 16)))
    assert mask.sum() == 2 * 4  # rows 20–21 only
    with pytest.raises(RegionError, match='columns A to D and rows 1 to 4'):
        parse_region('E1', (16, 16))


@pytest.mark.parametrize(
    ('text', 'message'),
    [
        ('', 'Name the cells'),
        (' , ', 'Name the cells'),
        ('A1:D4', 'whole picture'),
        ('A0', 'off this picture'),
        ('Z9', 'off this picture'),
        ('middle', 'not a cell'),
        ('A1:B2:C3', 'not a cell or a range'),
        ('11', 'not a cell'),
    ],
)
def test_refusals(text: str, message: str) -> None:
    with pytest.raises(RegionError, match=message):
        parse_region(text, (16, 16))
