"""The job-store interface and its records, shared by every backend (SQLite now, PostgreSQL later).

A job is one row; its life is a small state machine (see `JobStatus`). Three kinds of callers use the
store, each through a few verbs:

- the bot: `enqueue` (limits checked in the same transaction), `get`, `position`, `cancel`, `quota`;
- workers: `claim` (a fair batch, leased), `renew`/`progress` (keep the lease, learn about cancels),
  `complete`, `fail`, `finish_cancelled`, `release` (hand back on shutdown);
- delivery: `claim_deliveries`/`mark_delivered`, so a restarted bot posts each result once;

plus admin settings (`get_settings`, `set_setting`, `set_override`, `ban`, `unban`, `audit_log`) and
maintenance (`sweep`, `wait_for_change`).

Every worker write carries its `Lease`: the pair (job id, attempt) is a fencing token, so a worker whose
lease expired and was taken over changes nothing (the call returns False or an `Ack(ok=False)`).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from edalle.errors import InvalidParent
from edalle.jobs.limits import GuildSettings, Limits, Quota


class JobStatus(str, Enum):
    QUEUED = 'queued'  #: → running (claim), → cancelled (cancel)
    RUNNING = 'running'  #: → succeeded, → queued (error or expired lease, attempts left; or handed back),
    #: → failed (no attempts left), → cancelled (cancel requested, seen by the worker or at lease expiry)
    SUCCEEDED = 'succeeded'  #: final; delivery is recorded beside it (`delivered_at`)
    FAILED = 'failed'  #: final; `error` says why, in words for the user
    CANCELLED = 'cancelled'  #: final

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


#: Where the bot keeps members' pictures to expand, relative to the data dir (and, with workers on other
#: hosts, under job id `UPLOADS_JOB_ID` in the result store: the job does not exist yet when it is stored).
UPLOADS_DIR = 'uploads'
UPLOADS_JOB_ID = 0  # job ids start at 1 in both stores
_UPLOAD_PATH = re.compile(r'uploads/[A-Za-z0-9_-]{1,100}\.png')


def upload_source(request: JobRequest) -> str | None:
    """The uploaded picture a job starts from, or None when it starts from another job's picture (or none).

    Both stores call this in `enqueue`, so they accept and refuse the same requests: a job names at most
    one source (a parent job's picture, or a `source_path` under `uploads/`), and the path is one the bot
    could have written (no `..`, no absolute path), since a worker opens it under its data dir.
    """
    source = request.payload.get('source_path')
    if source is None:
        return None
    if request.parent_job_id is not None or request.parent_index is not None:
        raise InvalidParent('A job starts from one picture: a picture of a job or an uploaded image, not both.')
    if not isinstance(source, str) or not _UPLOAD_PATH.fullmatch(source):
        raise InvalidParent('That uploaded image cannot be found. Attach it again.')
    return source


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What the bot asks for. Each operation builds its own (`edalle.operations.<name>.request`)."""

    kind: str
    user_id: int
    guild_id: int | None
    channel_id: int | None
    payload: Mapping[str, Any]
    compat_key: str  # jobs with equal keys can run as one batch
    parent_job_id: int | None = None
    parent_index: int | None = None
    request_key: str | None = None  # idempotency: the same key twice returns the first job
    priority: int = 0
    max_attempts: int | None = None  # None: the store's default
    admin: bool = False  # the bot checked the requester is an admin here: owner-only sources of others are allowed


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's hold on a running job; (job_id, attempt) is the fencing token."""

    job_id: int
    attempt: int
    worker_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    status: JobStatus
    user_id: int
    guild_id: int | None
    channel_id: int | None
    request_key: str | None
    parent_job_id: int | None
    parent_index: int | None
    compat_key: str
    payload: dict[str, Any]
    priority: int
    available_at: float
    attempt: int
    handbacks: int
    max_attempts: int
    worker_id: str | None
    lease_until: float | None
    cancel_requested: bool
    stage: str | None
    step: int | None
    total: int | None
    preview_path: str | None
    progress_at: float | None
    result: dict[str, Any] | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    run_seconds: float | None
    status_message_id: int | None
    delivery_owner: str | None
    delivery_attempt: int
    delivery_until: float | None
    delivered_at: float | None
    result_message_id: int | None

    @classmethod
    def from_row(cls, row: sqlite3.Row | Mapping[str, Any]) -> Job:
        values = {name: row[name] for name in cls.__slots__}  # type: ignore[attr-defined]
        values['status'] = JobStatus(values['status'])  # ValueError on an unknown status
        values['payload'] = _json(values['payload'])
        values['result'] = _json(values['result'])
        values['cancel_requested'] = bool(values['cancel_requested'])
        return cls(**values)

    @property
    def lease(self) -> Lease | None:
        if self.status is not JobStatus.RUNNING or self.worker_id is None or self.lease_until is None:
            return None
        return Lease(self.id, self.attempt, self.worker_id, self.lease_until)

    @property
    def attempts_used(self) -> int:
        """Claims that ended in an error or a dead worker (clean hand-backs do not count)."""
        return self.attempt - self.handbacks

    @property
    def delivery_nonce(self) -> str:
        """Discord message nonce (≤ 25 chars) for the result post: with `enforce_nonce`, a retry after a
        crash between posting and `mark_delivered` returns the first message instead of a second one."""
        return f'edalle-job-{self.id}'


#: `enqueue(request, fit=…)`: reshapes a new request with the guild settings and user limits the enqueue
#: transaction read (or raises a refusal), so the bot need not read them in transactions of its own first.
FitRequest = Callable[['JobRequest', GuildSettings, Limits], 'JobRequest']


@dataclass(frozen=True, slots=True)
class Admission:
    """What `enqueue` returns: the job, whether it is new, and where it stands."""

    job: Job
    created: bool  # False: the request_key was seen before and this is the earlier job
    position: int  # jobs ahead of it in the fair order (0: next)
    eta_seconds: float | None  # None: no history or no worker online
    quota: Quota


@dataclass(frozen=True, slots=True)
class Position:
    ahead: int  # jobs before this one in the claim order; 0 = next (or running)
    eta_seconds: float | None  # until it starts; None when unknown or no worker is online
    workers_online: int


@dataclass(frozen=True, slots=True)
class Progress:
    stage: str  # e.g. 'generating', 'ranking', 'expanding'
    step: int
    total: int
    preview_path: str | None = None  # relative to the data dir


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to `renew`/`progress`."""

    ok: bool  # False: the lease is lost (expired and re-claimed, or the job ended): stop, discard output
    cancel_requested: bool = False


@dataclass(frozen=True, slots=True)
class WorkerCaps:
    """What a worker can run: the compat keys it serves (by prefix) and how many it batches."""

    compat_prefixes: tuple[str, ...]  # e.g. ('imagine:mini:', 'expand:mini'); empty: all
    max_batch: int = 1
    batch_kinds: frozenset[str] | None = None  # only these kinds are claimed several at once; None: the batchable operations


@dataclass(frozen=True, slots=True)
class Delivery:
    """A bot process's hold on posting one finished job; fenced like a worker lease."""

    job: Job
    owner: str
    attempt: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class Ban:
    guild_id: int
    user_id: int
    reason: str | None
    until: float | None
    banned_by: int | None
    banned_at: float


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    guild_id: int
    actor_id: int | None
    action: str
    target_user_id: int | None
    key: str | None
    old_value: Any
    new_value: Any
    reason: str | None
    created_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> AuditEntry:
        values = {name: row[name] for name in cls.__slots__}  # type: ignore[attr-defined]
        values['old_value'] = _json(values['old_value'])
        values['new_value'] = _json(values['new_value'])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class SweepReport:
    requeued: list[int] = field(default_factory=list)  # expired leases with attempts left
    failed: list[int] = field(default_factory=list)  # expired leases past max_attempts
    cancelled: list[int] = field(default_factory=list)  # expired leases of jobs whose cancel was asked
    workers_forgotten: int = 0


class JobStore(Protocol):
    """The verbs every job store implements. Times are Unix seconds from the store's clock."""

    # ---- bot side ----
    async def enqueue(self, request: JobRequest, *, fit: FitRequest | None = None) -> Admission: ...
    async def get(self, job_id: int) -> Job: ...
    async def get_many(self, job_ids: Sequence[int]) -> list[Job]: ...
    async def lineage(self, job_id: int, limit: int = 20) -> list[Job]: ...
    async def position(self, job_id: int) -> Position: ...
    async def cancel(self, job_id: int, *, by_user_id: int | None = None) -> Job: ...
    async def quota(self, guild_id: int | None, user_id: int) -> Quota: ...
    async def user_jobs(self, user_id: int, *, active_only: bool = True, limit: int = 20) -> list[Job]: ...
    async def queue_snapshot(self, limit: int = 20) -> list[Job]: ...
    async def set_status_message(self, job_id: int, message_id: int) -> None: ...
    async def wait_for_change(self, timeout: float) -> bool: ...

    # ---- worker side ----
    async def register_worker(self, worker_id: str, info: Mapping[str, Any]) -> None: ...
    async def unregister_worker(self, worker_id: str) -> None: ...
    async def workers_online(self) -> list[dict[str, Any]]: ...
    async def claim(self, worker_id: str, caps: WorkerCaps, lease_seconds: float) -> list[Job]: ...
    async def renew(self, leases: Sequence[Lease], lease_seconds: float) -> list[Ack]: ...
    async def progress(self, lease: Lease, progress: Progress, lease_seconds: float) -> Ack: ...
    async def complete(self, lease: Lease, result: Mapping[str, Any], run_seconds: float) -> JobStatus | None: ...
    async def fail(self, lease: Lease, error: str, *, retryable: bool, retry_after: float = 0.0) -> JobStatus | None: ...
    async def finish_cancelled(self, lease: Lease) -> bool: ...
    async def release(self, lease: Lease) -> bool: ...

    # ---- delivery ----
    async def undelivered(self, limit: int = 50) -> list[Job]: ...
    async def claim_deliveries(self, owner: str, limit: int, lease_seconds: float) -> list[Delivery]: ...
    async def mark_delivered(self, delivery: Delivery, message_id: int | None) -> bool: ...

    # ---- settings and admin ----
    async def get_settings(self, guild_id: int | None) -> GuildSettings: ...
    async def get_limits(self, guild_id: int | None, user_id: int | None = None) -> Limits: ...
    async def set_setting(
        self, guild_id: int, key: str, value: Any, *, actor_id: int | None, reason: str | None = None
    ) -> None: ...
    async def set_limit(
        self, guild_id: int, key: str, value: Any, *, actor_id: int | None, reason: str | None = None
    ) -> None: ...
    async def set_override(
        self, guild_id: int, user_id: int, key: str, value: Any, *, actor_id: int | None, reason: str | None = None
    ) -> None: ...
    async def ban(
        self, guild_id: int, user_id: int, *, actor_id: int | None, reason: str | None = None, until: float | None = None
    ) -> None: ...
    async def unban(self, guild_id: int, user_id: int, *, actor_id: int | None, reason: str | None = None) -> bool: ...
    async def get_ban(self, guild_id: int | None, user_id: int) -> Ban | None: ...
    async def audit_log(self, guild_id: int, limit: int = 50) -> list[AuditEntry]: ...
    async def member_settings(self, user_id: int) -> dict[str, Any]: ...
    async def set_member_setting(self, user_id: int, key: str, value: Any) -> dict[str, Any]: ...

    # ---- maintenance ----
    async def sweep(self) -> SweepReport: ...
    async def close(self) -> None: ...
