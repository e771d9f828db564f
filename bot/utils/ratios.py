"""Aspect ratios members can expand to: the buttons and select offered, and the check of typed ones.

The expander owns the geometry (`edalle.expander.geometry`, pure Python: no torch); the bot asks it
whether a typed ratio parses and is in range (1:3 to 3:1) before queueing, so a member learns about
`21:1` at once, with examples, instead of from a failed job minutes later. Whether the ratio adds anything
to the picture (1:1 widens a tall picture, not a square one) depends on the picture's shape: the
operation's check says so as the job is queued, with the same examples.
"""

from __future__ import annotations

from bot.errors import BadRatio

WIDE = (16, 9)  # the ↔️ button and reaction
TALL = (9, 16)  # the ↕️ button
#: the select under a picked candidate: (width, height, label)
OTHER_RATIOS: tuple[tuple[int, int, str], ...] = (
    (21, 9, 'ultra-wide'),
    (2, 1, 'panorama'),
    (3, 2, 'photo, wide'),
    (4, 3, 'classic, wide'),
    (3, 4, 'classic, tall'),
    (2, 3, 'photo, tall'),
    (1, 2, 'tall strip'),
    (3, 1, 'widest'),
)
EXAMPLES = '16:9, 9:16, 21:9, 4:3, 3:4, 3:2, 2:1, 1:2, 3:1'


def check_ratio(text: str) -> tuple[int, int]:
    """`'16:9'` → (16, 9); raises `BadRatio` (with valid examples) for what no picture could be widened to."""
    from edalle.expander.errors import ExpandError
    from edalle.expander.geometry import MAX_RATIO, parse_ratio

    try:
        width, height, label = parse_ratio(text)
    except ExpandError as exc:
        raise BadRatio(str(exc)) from None
    if not 1 / MAX_RATIO - 1e-9 <= width / height <= MAX_RATIO + 1e-9:
        raise BadRatio(f'{label} is out of range: the ratio must be between 1:3 (tallest) and 3:1 (widest). Try {EXAMPLES}.')
    if not (width.is_integer() and height.is_integer() and width < 100 and height < 100):
        raise BadRatio(f'Write the ratio with whole numbers below 100, for example {EXAMPLES}.')
    return int(width), int(height)
