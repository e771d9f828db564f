"""The durable job queue: the `JobStore` interface, its records, limits, and the SQLite store.

The bot imports from here (never from the worker, which pulls in the engine):

    from edalle.jobs import JobRequest, SqliteJobStore
    store = await SqliteJobStore.open('data/edalle.db')
    admission = await store.enqueue(JobRequest.imagine(user_id=…, guild_id=…, channel_id=…, prompt='…'))
"""

from __future__ import annotations

from edalle.jobs.limits import BOT_WIDE, GuildSettings, Limits, Quota, day_bounds, find_blocked_word
from edalle.jobs.sqlite import SqliteJobStore
from edalle.jobs.store import (
    EXPAND,
    IMAGINE,
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

__all__ = [
    'BOT_WIDE',
    'EXPAND',
    'IMAGINE',
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
