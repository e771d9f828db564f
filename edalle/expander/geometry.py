"""Where the picture sits in the widened canvas: token grid, pixel size, source box.

The VQGAN works on 16-px tokens, so every size is a whole number of tokens and the kept
picture (16×16 tokens for a DALL·E mini candidate) sits on token boundaries. New tokens are
added in equal numbers on both sides of one axis (left/right for a wide target, top/bottom
for a tall one), so the picture stays centred.

Differences from the original E-DALL-E notebook's geometry, all deliberate:
- the ratio string must be exactly `W:H` (or `WxH`, `W/H`); anything else is an error that
  lists valid examples, where the original silently ignored it or mis-read "16:9 (taller)"
  as a wide 16:9;
- tall targets are the exact transpose of wide ones (the original's tall branch crashed);
- ratios from 1:3 to 3:1 are allowed (the original stopped at 1:2 and 2:1);
- the number of new tokens is the even number nearest to what the ratio asks for (ties
  going to fewer), where the original always rounded down: 16:9 still gives 448×256, but
  4:3 gives 352×256 (1.375) rather than 320×256 (1.25), which is closer to 1.333.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from edalle.expander.errors import VALID_RATIO_EXAMPLES, RatioError

TOKEN_PX = 16  # pixels per VQGAN token side (the f16 model)
MAX_RATIO = 3.0  # 3:1 wide; 1:3 tall is the reciprocal
RATIO_PATTERN = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*[:x×/]\s*(\d+(?:\.\d+)?)\s*$', re.IGNORECASE)

Orientation = Literal['wide', 'tall']


@dataclass(frozen=True)
class Geometry:
    """A target canvas in tokens and pixels, and the source's box in it.

    `tokens` and `source_tokens` are (rows, columns). `offset` is the source's top-left
    token (row, column). `axis` is the latent dimension that grows: 3 (width) for a wide
    target, 2 (height) for a tall one, in (B, C, H, W) tensors.
    """

    ratio: str  # normalised 'W:H' as requested
    requested: float  # W / H as requested
    orientation: Orientation
    source_tokens: tuple[int, int]  # (rows, columns)
    tokens: tuple[int, int]  # (rows, columns)
    offset: tuple[int, int]  # (row, column) of the source's top-left token

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
    def achieved(self) -> float:
        """The ratio the canvas really has (token rounding moves it off the request)."""
        return self.width / self.height

    @property
    def axis(self) -> int:
        return 3 if self.orientation == 'wide' else 2

    @property
    def added_per_side(self) -> int:
        """New tokens on each side of the grown axis."""
        return self.offset[1] if self.orientation == 'wide' else self.offset[0]

    @property
    def source_box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the source in canvas pixels, PIL's box order."""
        top, left = self.offset[0] * TOKEN_PX, self.offset[1] * TOKEN_PX
        return (left, top, left + self.source_tokens[1] * TOKEN_PX, top + self.source_tokens[0] * TOKEN_PX)

    def transposed(self) -> Geometry:
        """The same geometry with rows and columns swapped (a tall target seen as a wide one)."""
        flip = {'wide': 'tall', 'tall': 'wide'}
        w, h = self.ratio.split(':')
        return Geometry(
            ratio=f'{h}:{w}',
            requested=1.0 / self.requested,
            orientation=flip[self.orientation],  # type: ignore[arg-type]
            source_tokens=self.source_tokens[::-1],
            tokens=self.tokens[::-1],
            offset=self.offset[::-1],
        )

    def describe(self) -> dict[str, object]:
        return {
            'ratio': self.ratio,
            'width': self.width,
            'height': self.height,
            'tokens': list(self.tokens),
            'offset': list(self.offset),
            'orientation': self.orientation,
        }


def parse_ratio(text: str) -> tuple[float, float, str]:
    """'16:9' → (16.0, 9.0, '16:9'). Raises RatioError with examples for anything else."""
    match = RATIO_PATTERN.match(text or '')
    if match is None:
        raise RatioError(f'{text!r} is not an aspect ratio. Write it as width:height, for example {VALID_RATIO_EXAMPLES}.')
    width, height = float(match.group(1)), float(match.group(2))
    if width <= 0 or height <= 0:
        raise RatioError(f'Both sides of the ratio must be above zero (got {text!r}); try {VALID_RATIO_EXAMPLES}.')
    return width, height, f'{_number(match.group(1))}:{_number(match.group(2))}'


def _number(digits: str) -> str:
    value = float(digits)
    return str(int(value)) if value.is_integer() else f'{value:g}'


def compute_geometry(ratio: str, source_tokens: tuple[int, int] = (16, 16)) -> Geometry:
    """The canvas for `ratio` around a source of `source_tokens` (rows, columns) tokens."""
    width, height, label = parse_ratio(ratio)
    requested = width / height
    if requested > MAX_RATIO * (1 + 1e-9) or requested < (1 / MAX_RATIO) * (1 - 1e-9):
        raise RatioError(
            f'{label} is out of range: the ratio must be between 1:3 (tallest) and 3:1 (widest). Try {VALID_RATIO_EXAMPLES}.'
        )
    rows0, cols0 = source_tokens
    source_ratio = cols0 / rows0
    if requested > source_ratio:
        orientation: Orientation = 'wide'
        added = _even_nearest(requested * rows0 - cols0)
        tokens, offset = (rows0, cols0 + added), (0, added // 2)
    else:
        orientation = 'tall'
        added = _even_nearest(cols0 / requested - rows0)
        tokens, offset = (rows0 + added, cols0), (added // 2, 0)
    if added <= 0:
        raise RatioError(
            f"{label} is too close to the picture's own shape ({_reduced(cols0, rows0)}) to add anything: "
            f'the canvas grows in steps of {2 * TOKEN_PX} px. Try {VALID_RATIO_EXAMPLES}.'
        )
    return Geometry(label, requested, orientation, (rows0, cols0), tokens, offset)


def _even_nearest(value: float) -> int:
    """The even integer nearest to `value`, ties going down: 12.44 → 12, 5.33 → 6, 1.0 → 0."""
    return 2 * math.ceil(value / 2 - 0.5)


def _reduced(width: int, height: int) -> str:
    divisor = math.gcd(width, height)
    return f'{width // divisor}:{height // divisor}'
