"""The ids a job store can hold, and what its verbs do with an id outside them.

Both stores keep ids in signed 64-bit columns (SQLite INTEGER, PostgreSQL BIGINT). Discord's snowflakes fit
(they stay below 2**63 until about the year 2084), but an id a member types need not: `.job
99999999999999999999`, or a button whose custom_id a modified client rewrote. Bound to a statement, such an
int raises `OverflowError` in sqlite3 and `DataError` in asyncpg, so the bot answered "something went wrong"
instead of "I can't find job #…". The stores therefore check the ids they are given before any statement:

- a job id out of range is a job that does not exist: `JobNotFound`, and `get_many` leaves it out;
- a user, server, channel or message id out of range cannot be anyone's: `InvalidId`, worded for a member;
- a row count (`limit=`) is clamped into range, so `.admin log 10**20` lists what there is.

Ids inside the range that no row holds (−1, 0, 2**63 − 1) need no check: the statement finds nothing.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Protocol

from edalle.errors import InvalidId, InvalidParent, JobNotFound


class HasIds(Protocol):
    """The ids of a request (`edalle.jobs.store.JobRequest`, which this module sits below)."""

    user_id: int
    guild_id: int | None
    channel_id: int | None
    parent_job_id: int | None
    parent_index: int | None


ID_MIN = -(2**63)
ID_MAX = 2**63 - 1


def fits(value: object) -> bool:
    """Whether `value` is an int an id column can hold. Floats, strings and None are not ids."""
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return False
    return ID_MIN <= number <= ID_MAX


def check_job_id(job_id: int) -> None:
    """Raise `JobNotFound` for a job id no row can have."""
    if not fits(job_id):
        raise JobNotFound(job_id)


def check_ids(*named: tuple[str, int | None]) -> None:
    """Raise `InvalidId` for the first `(what, id)` pair whose id no column can hold; None (no id) is fine."""
    for what, value in named:
        if value is not None and not fits(value):
            raise InvalidId(what, value)


def check_request_ids(request: HasIds) -> None:
    """`enqueue`'s ids: whose, where, and the candidate it starts from (a parent out of range is not a
    finished job's picture, the same `InvalidParent` a missing one gets)."""
    check_ids(('user', request.user_id), ('server', request.guild_id), ('channel', request.channel_id))
    if any(value is not None and not fits(value) for value in (request.parent_job_id, request.parent_index)):
        raise InvalidParent()


def storable_job_ids(job_ids: Iterable[int]) -> list[int]:
    """The job ids a row could have, in their order; the others cannot name a job."""
    return [operator.index(job_id) for job_id in job_ids if fits(job_id)]


def row_limit(limit: int) -> int:
    """A `LIMIT` both stores accept: at least 0 (PostgreSQL refuses negatives), at most `ID_MAX`."""
    return max(0, min(operator.index(limit), ID_MAX))
