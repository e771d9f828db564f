"""The candidate grid: tiles in rank order with the rank drawn on each, as members see it.

Pillow only, so the bot process (which never imports the models) could draw one too.
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

GAP = 4  # pixels between tiles: enough to tell them apart in Discord's preview


def grid_shape(count: int) -> tuple[int, int]:
    """(columns, rows) for `count` tiles: 9 → 3×3, 4 → 2×2, 5 → 3×2, 1 → 1×1."""
    columns = math.ceil(math.sqrt(count))
    return columns, math.ceil(count / columns)


def make_grid(images: list[Image.Image], *, numbered: bool = True) -> Image.Image:
    """Tiles left to right, top to bottom; tile i carries the number i + 1 in its corner."""
    if not images:
        raise ValueError('make_grid needs at least one image')
    tile_w, tile_h = images[0].size
    columns, rows = grid_shape(len(images))
    grid = Image.new('RGB', (columns * tile_w + (columns - 1) * GAP, rows * tile_h + (rows - 1) * GAP), (24, 24, 24))
    draw = ImageDraw.Draw(grid)
    font = _font(max(14, tile_h // 10))
    for i, image in enumerate(images):
        x = (i % columns) * (tile_w + GAP)
        y = (i // columns) * (tile_h + GAP)
        grid.paste(image.convert('RGB').resize((tile_w, tile_h)), (x, y))
        if numbered:
            _badge(draw, x + 6, y + 6, str(i + 1), font)
    return grid


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _badge(draw: ImageDraw.ImageDraw, x: int, y: int, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> None:
    """A dark rounded box with white text: readable on any picture."""
    left, top, right, bottom = draw.textbbox((x, y), text, font=font)
    pad = 4
    draw.rounded_rectangle((left - pad, top - pad, right + pad, bottom + pad), radius=pad, fill=(0, 0, 0))
    draw.text((x, y), text, fill=(255, 255, 255), font=font)
