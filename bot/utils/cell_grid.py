"""The picture a member chooses cells on: a copy of a picture with its repaint grid drawn over it (A1–D4 …).

The grid is the one `.repaint` reads (`edalle.expander.regions`): columns lettered from the left, rows
numbered from the top, each cell 4 × 4 tokens (64 px); a wider picture has more columns, a taller one more
rows, and a last column or row narrower where a side is not a multiple of 64 px. The copy is shown at up to
twice its size so the labels stay readable; Pillow alone, so the bot draws it without a model.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

from edalle.expander.canvas import source_tokens_of
from edalle.expander.regions import CELL_TOKENS, cell_name, grid_shape

CELL_PX = CELL_TOKENS * 16  # 64 px
MAX_SIDE_PX = 1024  # the overlay's longest side at most this (a 256 px picture is shown at 512)
LINE = (255, 255, 255)
SHADOW = (0, 0, 0)


def cell_names(size: tuple[int, int]) -> list[str]:
    """Every cell of a (width, height) picture's grid, row by row: ['A1', 'B1', …]."""
    rows, columns = grid_shape(source_tokens_of(size))
    return [cell_name((row, column)) for row in range(rows) for column in range(columns)]


def overlay(image: Image.Image) -> Image.Image:
    """`image` (whole 16-px tokens) enlarged up to 2× with its cell grid and every cell's name drawn on it."""
    rows, columns = grid_shape(source_tokens_of(image.size))
    scale = max(1, min(2, MAX_SIDE_PX // max(image.size)))
    shown = image.convert('RGB').resize((image.width * scale, image.height * scale), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(shown)
    step = CELL_PX * scale
    for x in range(step, shown.width, step):
        draw.line([(x, 0), (x, shown.height)], fill=SHADOW, width=3)
        draw.line([(x, 0), (x, shown.height)], fill=LINE, width=1)
    for y in range(step, shown.height, step):
        draw.line([(0, y), (shown.width, y)], fill=SHADOW, width=3)
        draw.line([(0, y), (shown.width, y)], fill=LINE, width=1)
    font = ImageFont.load_default(size=14 * scale)
    for row in range(rows):
        for column in range(columns):
            draw.text(
                (column * step + 4 * scale, row * step + 3 * scale),
                cell_name((row, column)),
                fill=LINE,
                font=font,
                stroke_width=2,
                stroke_fill=SHADOW,
            )
    return shown


def overlay_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    overlay(image).save(buffer, format='PNG')
    return buffer.getvalue()
