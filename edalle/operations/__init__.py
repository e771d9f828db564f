"""The operations: one module per kind of job, and the registry that lists them.

Everything that depends on what a job *is* (its request and checks, its quota bucket, its batching, its
runner, its result, its Discord module) lives in that operation's module (see `base.Operation`). The job
store, the worker, delivery and the bot's generic commands know operations only through `OPERATIONS`
below. Adding an operation is: its module here, its module under `bot/cogs/`, their tests, one line.
"""

from __future__ import annotations

from edalle.operations import dream, expand, imagine, pan, repaint, repaint_clip, square, upscale, vary, zoom
from edalle.operations.base import BUCKETS, Operation

OPERATIONS: tuple[Operation, ...] = (
    imagine.OPERATION,
    expand.OPERATION,
    upscale.OPERATION,
    vary.OPERATION,
    repaint.OPERATION,
    repaint_clip.OPERATION,
    zoom.OPERATION,
    pan.OPERATION,
    square.OPERATION,
    dream.OPERATION,
)

BY_NAME: dict[str, Operation] = {operation.name: operation for operation in OPERATIONS}
assert len(BY_NAME) == len(OPERATIONS), 'two operations share a name'
assert all(operation.bucket in BUCKETS for operation in OPERATIONS)


def get(name: str) -> Operation | None:
    """The operation of a job kind, or None for kinds no operation declares (a test's probe jobs)."""
    return BY_NAME.get(name)


def names() -> tuple[str, ...]:
    return tuple(BY_NAME)


def of_bucket(bucket: str) -> tuple[Operation, ...]:
    return tuple(operation for operation in OPERATIONS if operation.bucket == bucket)
