"""Regions to repaint, named on a grid of cells: `B2:C3`, `A1,B1`, `A1:B2, D4`.

A 256×256 picture is a 4×4 grid, columns A–D from the left and rows 1–4 from the top; each cell
is 4×4 VQGAN tokens (64 px). A 3×3 grid would split 16 tokens unevenly. Wider pictures get more
columns (448 px: A–G), taller ones more rows; where a side is not a multiple of 4 tokens the last
column (or row) is narrower. Pure Python and numpy, so the bot can check a region before queueing.
"""

from __future__ import annotations

import math
import re
import string

from edalle.expander.errors import ExpandError

CELL_TOKENS = 4  # a grid cell is 4×4 tokens: 64 px
CELL_PATTERN = re.compile(r'^([A-Za-z])\s*(\d{1,2})$')
Cell = tuple[int, int]  # (row, column) in the grid, from 0


class RegionError(ExpandError):
    """A region that does not parse, names a cell off the picture, or covers everything or nothing."""


def grid_shape(tokens: tuple[int, int]) -> tuple[int, int]:
    """(rows, columns) of the cell grid for a picture of `tokens` (rows, columns)."""
    rows, columns = tokens
    return (math.ceil(rows / CELL_TOKENS), math.ceil(columns / CELL_TOKENS))


def cell_name(cell: Cell) -> str:
    """(1, 1) → 'B2'."""
    row, column = cell
    return f'{string.ascii_uppercase[column]}{row + 1}'


def _grid_words(shape: tuple[int, int]) -> str:
    rows, columns = shape
    return f'columns A to {string.ascii_uppercase[columns - 1]} and rows 1 to {rows}'


def parse_region(text: str, tokens: tuple[int, int]) -> frozenset[Cell]:
    """'B2:C3' (a rectangle between two corners), 'A1,B1' (a list), or both mixed → the grid cells named.

    Refuses, with the grid's extent in the message: text that is not cells, a cell off the
    picture, and a region that covers every cell (nothing would be kept: dream instead) or none.
    """
    shape = grid_shape(tokens)
    if shape[1] > len(string.ascii_uppercase):
        raise RegionError(f'This picture is too wide for lettered columns ({shape[1]} of them).')
    example = 'for example B2, B2:C3 or A1,B1'
    parts = [p.strip() for p in (text or '').replace(';', ',').split(',')]
    if not any(parts):
        raise RegionError(f'Name the cells to repaint: {_grid_words(shape)}, {example}.')
    cells: set[Cell] = set()
    for part in parts:
        if not part:
            continue
        corners = [c.strip() for c in re.split(r'\s*[:\-–]\s*', part)]
        if len(corners) not in (1, 2):
            raise RegionError(f'{part!r} is not a cell or a range of cells; {example}.')
        (r0, c0), (r1, c1) = _cell(corners[0], shape), _cell(corners[-1], shape)
        for row in range(min(r0, r1), max(r0, r1) + 1):
            for column in range(min(c0, c1), max(c0, c1) + 1):
                cells.add((row, column))
    if len(cells) == shape[0] * shape[1]:
        raise RegionError(
            'That region is the whole picture, so nothing would be kept around it; '
            'choose fewer cells, or dream a new picture instead.'
        )
    return frozenset(cells)


def _cell(text: str, shape: tuple[int, int]) -> Cell:
    match = CELL_PATTERN.match(text)
    if match is None:
        raise RegionError(f'{text!r} is not a cell: write a column letter and a row number, e.g. B2 or B2:C3.')
    column = string.ascii_uppercase.index(match.group(1).upper())
    row = int(match.group(2)) - 1
    if not (0 <= row < shape[0] and 0 <= column < shape[1]):
        raise RegionError(f'{text.upper()} is off this picture: its grid has {_grid_words(shape)}.')
    return (row, column)


def region_mask(cells: frozenset[Cell] | set[Cell], tokens: tuple[int, int]) -> list[list[bool]]:
    """Grid cells → (rows, columns) bool token mask, as rows of bools (the bot builds regions without numpy)."""
    return [
        [(row // CELL_TOKENS, column // CELL_TOKENS) in cells for column in range(tokens[1])] for row in range(tokens[0])
    ]


def describe_region(cells: frozenset[Cell] | set[Cell]) -> str:
    """The cells as a sorted comma list ('A1,B1,B2'), for messages and results."""
    return ','.join(cell_name(c) for c in sorted(cells))
