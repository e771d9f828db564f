"""Errors of the expander.

`ExpandError` and its subclasses are input problems a user can fix (a bad ratio, an image
that is not an image); their text is written for the user and the CLI prints it without a
traceback. `ExpandCancelled` is not an error of the input: the caller asked to stop.
"""

from __future__ import annotations

VALID_RATIO_EXAMPLES = '16:9, 9:16, 21:9, 4:3, 3:4, 3:2, 2:1, 1:2, 3:1'


class ExpandError(ValueError):
    """The expansion cannot run with this input; the message says what to change."""


class RatioError(ExpandError):
    """The target aspect ratio does not parse, is out of range, or adds nothing."""


class SourceError(ExpandError):
    """The source picture cannot be used (missing, not an image, too big, broken)."""


class ExpandCancelled(Exception):
    """`should_cancel()` returned True between two optimisation steps."""

    def __init__(self, step: int, total: int) -> None:
        self.step = step
        self.total = total
        super().__init__(f'expansion cancelled after {step} of {total} steps')
