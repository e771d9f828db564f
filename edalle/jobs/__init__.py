"""The durable job queue: the `JobStore` interface, its records, limits, and the SQLite store.

The bot imports from here (never from the worker, which pulls in the engine):

    from edalle.jobs import SqliteJobStore
    from edalle.operations import imagine
    store = await SqliteJobStore.open('data/edalle.db')
    admission = await store.enqueue(imagine.request(user_id=…, guild_id=…, channel_id=…, prompt='…'))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edalle.jobs.limits import BOT_WIDE, GuildSettings, Limits, Quota, day_bounds, find_blocked_word
from edalle.jobs.store import (
    Ack,
    Admission,
    AuditEntry,
    Ban,
    Delivery,
    Job,
    JobRequest,
    JobStatus,
    JobStore,
    Lease,
    Position,
    Progress,
    SweepReport,
    WorkerCaps,
)

if TYPE_CHECKING:
    from edalle.jobs.sqlite import SqliteJobStore


def __getattr__(name: str) -> Any:
    """`SqliteJobStore` on first use: the stores check requests with the operations registry, whose modules build
    requests from the records above, so importing the store here eagerly would import this package in a circle."""
    if name == 'SqliteJobStore':
        from edalle.jobs.sqlite import SqliteJobStore

        return SqliteJobStore
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = [
    'BOT_WIDE',
    'Ack',
    'Admission',
    'AuditEntry',
    'Ban',
    'Delivery',
    'GuildSettings',
    'Job',
    'JobRequest',
    'JobStatus',
    'JobStore',
    'Lease',
    'Limits',
    'Position',
    'Progress',
    'Quota',
    'SqliteJobStore',
    'SweepReport',
    'WorkerCaps',
    'day_bounds',
    'find_blocked_word',
]
