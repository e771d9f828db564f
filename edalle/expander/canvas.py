"""A canvas: the picture to make, in VQGAN tokens, where the source sits on it, and which cells may change.

Every operation of the expander is one canvas and one optimisation (`default.run_canvas`):

- **expand** to a ratio (`canvas_for_ratio`): new columns (or rows) split over both sides, as
  `geometry.compute_geometry` has always made them, so results are unchanged;
- **zoom** out by 1.5 or 2 (`canvas_for_zoom`): the source in the middle, a ring of new cells
  around it (16×16 → 24×24, → 32×32); at the size limit the source is first scaled down so
  that chained zooms keep a constant size (`Canvas.source_scale` says by how much);
- **pan** one side by half the picture's short side (`canvas_for_pan`): 16×16 → 16×24 right;
- **square** a widened picture (`canvas_for_square`): its short side grows to its long one;
- **repaint** a region (`canvas_for_region`): the canvas is the source, the free cells a set of
  grid cells inside it (`regions.parse_region`);
- **dream** (`canvas_for_dream`, `canvas_for_refine`): every cell free.

A canvas's `mode` follows from where its free cells are: all of them outside the source
('extend': composited with a colour-matched seam, the source's pixels kept bit for bit), all
inside it ('repaint': feathered into the source over one token), or everywhere ('dream').

Sizes are (rows, columns) in tokens and rectangles (top, left, bottom, right) in tokens, ends
excluded, like numpy slices; `size` and `*_px` boxes are in pixels in PIL's order. This module
needs neither torch nor a model, so the bot can build and check a canvas before queueing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from edalle.expander.errors import ExpandError
from edalle.expander.geometry import MAX_RATIO, TOKEN_PX, Geometry, compute_geometry, parse_ratio

if TYPE_CHECKING:
    import numpy as np

Rect = tuple[int, int, int, int]  # (top, left, bottom, right) in tokens, bottom and right excluded
Mode = Literal['extend', 'repaint', 'dream']
Side = Literal['left', 'right', 'top', 'bottom']
SIDES: tuple[Side, ...] = ('left', 'right', 'top', 'bottom')

MAX_CANVAS_PX = 1024  # default limit on the longest side of any canvas
ZOOM_FACTORS = (1.5, 2.0)  # what the bot offers; any factor from MIN_ZOOM to MAX_ZOOM is accepted
MIN_ZOOM, MAX_ZOOM = 1.25, 4.0
PAN_FRACTION = 0.5  # a pan adds this fraction of the picture's short side
DREAM_SHORT_PX = 256  # a dream's short side unless asked otherwise

# How each mode may start ('auto': the first; a dream from a picture: 'refine').
INITS: dict[str, tuple[str, ...]] = {
    'extend': ('mirror',),  # blurred mirror images of the source
    'repaint': ('edit', 'remove'),  # the region's own latents / a blur of what surrounds it
    'dream': ('random', 'grey', 'noise', 'refine'),  # random codes / mid-grey / pixel noise / the picture's latents
}


class CanvasError(ExpandError):
    """The canvas cannot be made: too large, a bad direction or factor, a source not in whole tokens."""


@dataclass(frozen=True)
class Canvas:
    """The picture to optimise: its token grid, the source's box on it, the free cells.

    `free` is a tuple of disjoint rectangles covering exactly the cells that change, in a
    fixed order (top to bottom, then left to right): each becomes one latent tensor of the
    optimisation, so a ratio canvas has the two side bands the expander always had.
    """

    kind: str  # 'expand' | 'zoom' | 'pan' | 'square' | 'repaint' | 'dream': what the user asked for
    tokens: tuple[int, int]  # (rows, columns)
    source: Rect | None  # where the source sits; None: a dream from nothing
    free: tuple[Rect, ...]
    label: str = ''  # the request in words: '16:9', '2x', 'right', 'B2:C3', …
    source_scale: float = 1.0  # the source's size here ÷ the size it was given at (< 1: scaled down to fit)
    geometry: Geometry | None = field(default=None, compare=False)  # the ratio's geometry, for 'expand'

    def __post_init__(self) -> None:
        rows, columns = self.tokens
        if rows < 1 or columns < 1:
            raise CanvasError(f'A canvas needs at least one token each way (got {rows}×{columns}).')
        boxes = list(self.free) + ([self.source] if self.source is not None else [])
        for top, left, bottom, right in boxes:
            if not (0 <= top < bottom <= rows and 0 <= left < right <= columns):
                raise ValueError(f'rectangle {(top, left, bottom, right)} is not inside the {rows}×{columns} canvas')
        if not self.free:
            raise CanvasError('Nothing on this canvas may change; choose at least one cell.')
        free = self.free_cells()
        if sum(map(sum, free)) != sum(rect_area(r) for r in self.free):
            raise ValueError('free rectangles overlap')
        if self.source is None and not all(map(all, free)):
            raise ValueError('a canvas without a source must have every cell free')
        _ = self.mode  # refuses free cells both inside and outside the source

    # ------------------------------------------------------------------ sizes

    @property
    def width(self) -> int:
        return self.tokens[1] * TOKEN_PX

    @property
    def height(self) -> int:
        return self.tokens[0] * TOKEN_PX

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, PIL's order."""
        return (self.width, self.height)

    @property
    def source_tokens(self) -> tuple[int, int]:
        """(rows, columns) of the source on this canvas; (0, 0) without one."""
        if self.source is None:
            return (0, 0)
        top, left, bottom, right = self.source
        return (bottom - top, right - left)

    @property
    def source_px(self) -> tuple[int, int]:
        """(width, height) the source picture must have on this canvas (after `source_scale`)."""
        rows, columns = self.source_tokens
        return (columns * TOKEN_PX, rows * TOKEN_PX)

    @property
    def source_box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the source in canvas pixels, PIL's box order."""
        if self.source is None:
            raise ValueError('this canvas has no source')
        top, left, bottom, right = self.source
        return (left * TOKEN_PX, top * TOKEN_PX, right * TOKEN_PX, bottom * TOKEN_PX)

    # ------------------------------------------------------------------ cells

    def free_cells(self) -> list[list[bool]]:
        """(rows, columns) as rows of bools: True where the cell may change (plain Python, for the bot's checks)."""
        rows, columns = self.tokens
        cells = [[False] * columns for _ in range(rows)]
        for top, left, bottom, right in self.free:
            for row in range(top, bottom):
                cells[row][left:right] = [True] * (right - left)
        return cells

    def free_mask(self) -> np.ndarray:
        """(rows, columns) bool array: True where the cell may change (for the optimiser)."""
        import numpy as np  # the builders run in the bot, which has no numpy; only the optimiser asks for this

        mask = np.zeros(self.tokens, dtype=bool)
        for top, left, bottom, right in self.free:
            mask[top:bottom, left:right] = True
        return mask

    @property
    def free_bbox(self) -> Rect:
        """The smallest rectangle holding every free cell."""
        return (
            min(r[0] for r in self.free),
            min(r[1] for r in self.free),
            max(r[2] for r in self.free),
            max(r[3] for r in self.free),
        )

    @property
    def mode(self) -> Mode:
        """'dream' (every cell free), 'extend' (free cells all outside the source) or 'repaint' (all inside)."""
        cells = self.free_cells()
        if all(map(all, cells)):
            return 'dream'
        assert self.source is not None
        top, left, bottom, right = self.source
        inside = sum(sum(row[left:right]) for row in cells[top:bottom])
        if not inside:
            return 'extend'
        if inside == sum(map(sum, cells)):
            return 'repaint'
        raise ValueError('free cells both inside and outside the source are not supported')

    @property
    def sides(self) -> tuple[Side, ...]:
        """The sides of the source box with new canvas beyond them (an 'extend' canvas's seams)."""
        if self.source is None:
            return ()
        top, left, bottom, right = self.source
        rows, columns = self.tokens
        beyond = {'left': left > 0, 'right': right < columns, 'top': top > 0, 'bottom': bottom < rows}
        return tuple(side for side in SIDES if beyond[side])

    @property
    def vertical_only(self) -> bool:
        """The canvas grows only above and below the source: the transpose of one that grows only sideways."""
        return self.mode == 'extend' and set(self.sides) <= {'top', 'bottom'}

    def transposed(self) -> Canvas:
        """Rows and columns swapped (a canvas that grows vertically seen as one that grows sideways)."""

        def flip(rect: Rect) -> Rect:
            top, left, bottom, right = rect
            return (left, top, right, bottom)

        free = tuple(sorted(flip(r) for r in self.free))
        geometry = self.geometry.transposed() if self.geometry is not None else None
        source = flip(self.source) if self.source is not None else None
        return Canvas(self.kind, self.tokens[::-1], source, free, self.label, self.source_scale, geometry)

    def view_box(self) -> tuple[int, int, int, int] | None:
        """(left, top, right, bottom) px where CLIP's views are drawn; None: the whole canvas.

        A pan's new band and one short side of the picture beside it: views further away see
        only the kept picture, so they would cost CLIP forward passes and guide nothing.
        """
        if self.kind != 'pan':
            return None
        short = min(self.tokens)
        rows, columns = self.tokens
        top, left, bottom, right = self.free_bbox
        if self.sides[0] in ('left', 'right'):
            top, left, bottom, right = 0, max(0, left - short), rows, min(columns, right + short)
        else:
            top, left, bottom, right = max(0, top - short), 0, min(rows, bottom + short), columns
        if (top, left, bottom, right) == (0, 0, rows, columns):
            return None
        return (left * TOKEN_PX, top * TOKEN_PX, right * TOKEN_PX, bottom * TOKEN_PX)

    def focus_box(self) -> tuple[int, int, int, int] | None:
        """(left, top, right, bottom) px that half the views are placed on: a repaint's region; None otherwise."""
        if self.mode != 'repaint':
            return None
        top, left, bottom, right = self.free_bbox
        return (left * TOKEN_PX, top * TOKEN_PX, right * TOKEN_PX, bottom * TOKEN_PX)

    # ------------------------------------------------------------------ decoding

    def decode_windows(self, context_tokens: int) -> tuple[Rect, ...]:
        """The token rectangles the decoder runs on each step; together they cover every free cell.

        - extend, one side (a pan): one window, the new band plus `context_tokens` of the source;
        - extend, two opposite sides (a ratio, a square): one window per side, as the expander
          always decoded them (same sizes: one batch);
        - extend on more sides (a zoom), and dream: the whole canvas. Separate windows would meet
          at the corners, where the decoder's GroupNorm and attention, which see a window and not
          the canvas, give each window its own tone: a visible join;
        - repaint: the region's bounding box plus `context_tokens` around it (the feather band
          and the seam band lie within 2 tokens).
        `context_tokens` 0 decodes the whole canvas.
        """
        rows, columns = self.tokens
        whole: Rect = (0, 0, rows, columns)
        mode = self.mode
        if mode == 'dream' or context_tokens <= 0:
            return (whole,)
        if mode == 'repaint':
            top, left, bottom, right = self.free_bbox
            c = context_tokens
            return ((max(0, top - c), max(0, left - c), min(rows, bottom + c), min(columns, right + c)),)
        assert self.source is not None
        top, left, bottom, right = self.source
        sides = set(self.sides)
        kept_rows, kept_columns = bottom - top, right - left
        if sides == {'left', 'right'}:
            c = min(context_tokens, kept_columns // 2)
            return ((0, 0, rows, left + c), (0, right - c, rows, columns)) if c > 0 else (whole,)
        if sides == {'top', 'bottom'}:
            c = min(context_tokens, kept_rows // 2)
            return ((0, 0, top + c, columns), (bottom - c, 0, rows, columns)) if c > 0 else (whole,)
        if len(sides) == 1 and (kept_rows == rows or kept_columns == columns):
            c = context_tokens
            (side,) = sides
            window = {
                'left': (0, 0, rows, min(columns, left + c)),
                'right': (0, max(0, right - c), rows, columns),
                'top': (0, 0, min(rows, top + c), columns),
                'bottom': (max(0, bottom - c), 0, rows, columns),
            }[side]
            return (window,)
        return (whole,)

    def resolve_init(self, init: str | None) -> str:
        """The start `init` names on this canvas, checked (`INITS`); 'auto' or None: the mode's usual one."""
        mode = self.mode
        allowed = INITS[mode]
        if mode == 'dream' and self.source is None:
            allowed = tuple(a for a in allowed if a != 'refine')
        if init in ('auto', '', None):
            return 'refine' if mode == 'dream' and self.source is not None else allowed[0]
        if init not in allowed:
            raise CanvasError(f'{init!r} is not a way to start a {self.kind}; choose one of: {", ".join(allowed)}.')
        return init

    def decoded_tokens(self, context_tokens: int) -> int:
        """How many latent cells the decoder runs on per image and step (the main cost after CLIP)."""
        return sum(rect_area(w) for w in self.decode_windows(context_tokens))

    # ------------------------------------------------------------------ reporting

    @property
    def stage(self) -> str:
        """The progress stage name: 'expand' for a ratio (as before), else the kind."""
        return self.kind

    def describe(self) -> dict[str, object]:
        """What a result records about its canvas (JSON-friendly)."""
        out: dict[str, object] = {
            'canvas': self.kind,
            'label': self.label,
            'width': self.width,
            'height': self.height,
            'tokens': list(self.tokens),
            'mode': self.mode,
        }
        if self.source is not None:
            out['source_rect'] = list(self.source)
            out['offset'] = [self.source[0], self.source[1]]
        if self.source_scale != 1.0:
            out['source_scale'] = self.source_scale
        if self.kind == 'repaint':
            out['region'] = [list(r) for r in self.free]
        if self.geometry is not None:  # a ratio: the keys results have always had
            out.update(self.geometry.describe())
        return out


# ---------------------------------------------------------------------- builders


def canvas_for_ratio(source_size_px: tuple[int, int], ratio: str, max_canvas_px: int = MAX_CANVAS_PX) -> Canvas:
    """Widen (or heighten) to `ratio`: `compute_geometry`'s rule, new cells split over both sides."""
    rows0, columns0 = source_tokens_of(source_size_px)
    geometry = compute_geometry(ratio, (rows0, columns0))
    rows, columns = geometry.tokens
    _check_limit((rows, columns), max_canvas_px, f'Widening to {geometry.ratio}')
    top, left = geometry.offset
    source = (top, left, top + rows0, left + columns0)
    if geometry.orientation == 'wide':
        free = ((0, 0, rows, left), (0, left + columns0, rows, columns))
    else:
        free = ((0, 0, top, columns), (top + rows0, 0, rows, columns))
    return Canvas('expand', (rows, columns), source, free, geometry.ratio, 1.0, geometry)


def canvas_for_zoom(source_size_px: tuple[int, int], factor: float, max_canvas_px: int = MAX_CANVAS_PX) -> Canvas:
    """Zoom out by `factor`: the source in the middle, new cells on all four sides (16×16 → 24×24 at 1.5, 32×32 at 2).

    Where factor × the source passes `max_canvas_px`, the canvas is the largest that fits with
    the source's shape, and the source is scaled down to 1/factor of it: a zoom of a picture at
    the limit keeps the limit's size, so zooms can be chained. `source_scale` says by how much
    (e.g. 0.5 for 2× of a 1024-px picture); the caller resizes the picture (`api` does).
    """
    if not isinstance(factor, int | float) or not MIN_ZOOM <= float(factor) <= MAX_ZOOM:
        raise CanvasError(f'The zoom factor must be between {MIN_ZOOM:g} and {MAX_ZOOM:g}, e.g. 1.5 or 2 (got {factor}).')
    rows0, columns0 = source_tokens_of(source_size_px)
    limit = _limit_tokens(max_canvas_px)
    rows, columns = round(rows0 * factor), round(columns0 * factor)
    scale = 1.0
    if max(rows, columns) > limit:  # shrink: the canvas at the limit, the source 1/factor of it
        shrink = limit / max(rows0, columns0) / factor
        rows, columns = max(1, round(rows0 * shrink * factor)), max(1, round(columns0 * shrink * factor))
        rows, columns = min(rows, limit), min(columns, limit)
        new_rows0, new_columns0 = max(1, round(rows / factor)), max(1, round(columns / factor))
        if new_rows0 >= rows or new_columns0 >= columns:
            raise CanvasError(f'A {max_canvas_px}-px limit leaves no room to zoom out by {factor:g}.')
        scale = new_columns0 / columns0 if columns0 >= rows0 else new_rows0 / rows0
        rows0, columns0 = new_rows0, new_columns0
    top, left = (rows - rows0) // 2, (columns - columns0) // 2
    source = (top, left, top + rows0, left + columns0)
    mask = [[not (top <= r < top + rows0 and left <= c < left + columns0) for c in range(columns)] for r in range(rows)]
    return Canvas('zoom', (rows, columns), source, rects_from_mask(mask), f'{factor:g}x', scale)


def zoom_shrink(
    source_size_px: tuple[int, int], factor: float, max_canvas_px: int = MAX_CANVAS_PX
) -> tuple[tuple[int, int], float]:
    """((width, height), scale): the size a zoom needs the source at, and the scale from the given size (1.0: as is)."""
    canvas = canvas_for_zoom(source_size_px, factor, max_canvas_px)
    return canvas.source_px, canvas.source_scale


def canvas_for_pan(
    source_size_px: tuple[int, int],
    direction: str,
    max_canvas_px: int = MAX_CANVAS_PX,
    fraction: float = PAN_FRACTION,
) -> Canvas:
    """Pan `direction` ('left', 'right', 'up', 'down'): new cells on that side, `fraction` of the picture's short side.

    Half of the short side, so a 256×256 picture pans to 384×256 and then to 512×256: each pan
    moves a square view by half its width, however wide the picture already is.
    """
    sides = {'left': 'left', 'right': 'right', 'up': 'top', 'down': 'bottom', 'top': 'top', 'bottom': 'bottom'}
    side = sides.get(direction.strip().lower()) if isinstance(direction, str) else None
    if side is None:
        raise CanvasError(f'{direction!r} is not a direction to pan; choose left, right, up or down.')
    if not 0 < fraction <= 1:
        raise CanvasError(f'A pan adds between 0 and 1 of the picture (got {fraction}).')
    rows0, columns0 = source_tokens_of(source_size_px)
    added = max(1, round(min(rows0, columns0) * fraction))
    if side in ('left', 'right'):
        rows, columns = rows0, columns0 + added
        left = added if side == 'left' else 0
        source = (0, left, rows0, left + columns0)
        free: Rect = (0, 0, rows, added) if side == 'left' else (0, columns0, rows, columns)
    else:
        rows, columns = rows0 + added, columns0
        top = added if side == 'top' else 0
        source = (top, 0, top + rows0, columns0)
        free = (0, 0, added, columns) if side == 'top' else (rows0, 0, rows, columns)
    _check_limit((rows, columns), max_canvas_px, f'Panning {direction.strip().lower()}')
    return Canvas('pan', (rows, columns), source, (free,), direction.strip().lower())


def canvas_for_square(source_size_px: tuple[int, int], max_canvas_px: int = MAX_CANVAS_PX) -> Canvas:
    """Back to 1:1: the short side grows to the long one, new cells split over both ends (one more after if odd)."""
    rows0, columns0 = source_tokens_of(source_size_px)
    if rows0 == columns0:
        raise CanvasError('The picture is already square.')
    side = max(rows0, columns0)
    _check_limit((side, side), max_canvas_px, 'Making it square')
    added = side - min(rows0, columns0)
    before = added // 2
    if columns0 > rows0:  # wide: grow rows
        source = (before, 0, before + rows0, columns0)
        free: tuple[Rect, ...] = ((0, 0, before, side), (before + rows0, 0, side, side))
    else:
        source = (0, before, rows0, before + columns0)
        free = ((0, 0, side, before), (0, before + columns0, side, side))
    free = tuple(r for r in free if r[0] < r[2] and r[1] < r[3])
    return Canvas('square', (side, side), source, free, '1:1')


def canvas_for_region(source_size_px: tuple[int, int], region: str) -> Canvas:
    """Repaint the grid cells named in `region` ('B2:C3', 'A1,B1', …; see `regions.parse_region`)."""
    from edalle.expander.regions import parse_region, region_mask

    rows, columns = source_tokens_of(source_size_px)
    cells = parse_region(region, (rows, columns))
    mask = region_mask(cells, (rows, columns))
    return Canvas('repaint', (rows, columns), (0, 0, rows, columns), rects_from_mask(mask), region.strip().upper())


def canvas_for_dream(ratio: str = '1:1', max_canvas_px: int = MAX_CANVAS_PX, short_px: int = DREAM_SHORT_PX) -> Canvas:
    """A picture from the prompt alone: every cell free, `short_px` on the short side, `ratio` (1:3 to 3:1)."""
    width, height, label = parse_ratio(ratio)
    requested = width / height
    if not 1 / MAX_RATIO - 1e-9 <= requested <= MAX_RATIO + 1e-9:
        raise CanvasError(f'{label} is out of range: a dream can be from 1:3 (tallest) to 3:1 (widest).')
    short = max(1, round(short_px / TOKEN_PX))
    if requested >= 1:
        rows, columns = short, max(1, round(short * requested))
    else:
        rows, columns = max(1, round(short / requested)), short
    _check_limit((rows, columns), max_canvas_px, f'A {label} dream')
    return Canvas('dream', (rows, columns), None, ((0, 0, rows, columns),), label)


def canvas_for_refine(source_size_px: tuple[int, int], max_canvas_px: int = MAX_CANVAS_PX) -> Canvas:
    """A dream that starts from a picture ('refine'): its size, every cell free, the picture's latents as the start."""
    rows, columns = source_tokens_of(source_size_px)
    _check_limit((rows, columns), max_canvas_px, 'Refining this picture')
    return Canvas('dream', (rows, columns), (0, 0, rows, columns), ((0, 0, rows, columns),), 'refine')


def canvas_from_geometry(geometry: Geometry) -> Canvas:
    """The canvas of a ratio `Geometry` (what `run_default` was always given)."""
    rows0, columns0 = geometry.source_tokens
    return canvas_for_ratio((columns0 * TOKEN_PX, rows0 * TOKEN_PX), geometry.ratio, max_canvas_px=1 << 30)


# ---------------------------------------------------------------------- helpers


def source_tokens_of(size_px: tuple[int, int]) -> tuple[int, int]:
    """(width, height) px → (rows, columns) tokens; refuses sizes that are not whole 16-px tokens."""
    width, height = size_px
    if width < TOKEN_PX or height < TOKEN_PX or width % TOKEN_PX or height % TOKEN_PX:
        raise CanvasError(
            f'The picture is {width}×{height} px; a source must be whole {TOKEN_PX}-px tokens '
            '(fit it first with `sources.fit_picture`).'
        )
    return (height // TOKEN_PX, width // TOKEN_PX)


def _limit_tokens(max_canvas_px: int) -> int:
    if max_canvas_px < TOKEN_PX:
        raise CanvasError(f'The canvas limit must be at least {TOKEN_PX} px (got {max_canvas_px}).')
    return max_canvas_px // TOKEN_PX


def _check_limit(tokens: tuple[int, int], max_canvas_px: int, what: str) -> None:
    limit = _limit_tokens(max_canvas_px)
    rows, columns = tokens
    if max(rows, columns) > limit:
        raise CanvasError(
            f'{what} would make a {columns * TOKEN_PX}×{rows * TOKEN_PX} picture; the largest allowed is '
            f'{limit * TOKEN_PX} px on the longest side.'
        )


def rects_from_mask(mask: Sequence[Sequence[bool]] | np.ndarray) -> tuple[Rect, ...]:
    """(rows, columns) bool → disjoint rectangles covering its True cells, sorted by (top, left).

    Runs of True along each row; a run continues the rectangle above it when it spans the same
    columns. A ring gives top, left, right, bottom bands; a grid-cell region few rectangles.
    Plain Python (rows of bools or an array), so the bot can build canvases without numpy.
    """
    rows = [[bool(cell) for cell in row] for row in mask]
    done: list[Rect] = []
    open_: dict[tuple[int, int], int] = {}  # (left, right) → top of the rectangle still growing
    for row in range(len(rows) + 1):
        runs = set(_runs(rows[row])) if row < len(rows) else set()
        for span in list(open_):
            if span not in runs:
                done.append((open_.pop(span), span[0], row, span[1]))
        for span in runs:
            open_.setdefault(span, row)
    return tuple(sorted(done))


def rect_area(rect: Rect) -> int:
    top, left, bottom, right = rect
    return (bottom - top) * (right - left)


def _runs(line: Sequence[bool]) -> list[tuple[int, int]]:
    """The [start, end) runs of True in a row."""
    runs, start = [], None
    for column, cell in enumerate([*line, False]):
        if cell and start is None:
            start = column
        elif not cell and start is not None:
            runs.append((start, column))
            start = None
    return runs
