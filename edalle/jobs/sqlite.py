"""`SqliteJobStore`: the embedded job store, one SQLite file shared by the bot and its workers.

Every write is one `BEGIN IMMEDIATE` transaction, so SQLite's single writer makes each check-and-write
atomic: admission limits are checked in the transaction that inserts the job, and a claim picks and
leases its batch without any other claimer in between. aiosqlite runs SQLite on its own thread, so the
bot's event loop never waits on the file.

Each verb's transaction (BEGIN, its statements, COMMIT or ROLLBACK) is ONE plain function handed to that
thread (`_write`/`_read`), not one round trip per statement:

- a caller cancelled at any await cannot split a transaction: the function runs to its end on the
  thread whatever happens to the awaiting task (with a round trip per statement, a cancel that landed
  while `BEGIN` was in flight left the shared connection inside a transaction, and every later verb
  failed with "cannot start a transaction within a transaction");
- the thread runs one function at a time, so transactions of the coroutines sharing the connection
  cannot interleave (no `asyncio.Lock` needed), and an `.imagine` costs 2 thread hops instead of ~59
  (bench/RESULTS.md, bot under load).

Wake-ups: `wait_for_change` polls `PRAGMA data_version`, which changes when another connection
commits. Treat it as a hint and re-read the rows you watch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from edalle import errors
from edalle.db import connect
from edalle.jobs import transactions as tx
from edalle.jobs.ids import check_ids, check_job_id, check_request_ids, fits, row_limit, storable_job_ids
from edalle.jobs.limits import (
    GuildSettings,
    Limits,
    Quota,
    require_limit,
    validate_setting,
)
from edalle.jobs.ranking import ACTIVE_RANKED, pick_batch_query
from edalle.jobs.store import (
    Ack,
    Admission,
    AuditEntry,
    Ban,
    Delivery,
    FitRequest,
    Job,
    JobRequest,
    JobStatus,
    Lease,
    Position,
    Progress,
    SweepReport,
    WorkerCaps,
)

log = logging.getLogger(__name__)

Clock = Callable[[], float]
T = TypeVar('T')
U = TypeVar('U')

RECENT_RUNS_FOR_ETA = 50
WORKER_ONLINE_SECONDS = 90.0  # a worker heard from this recently counts as online
WORKER_FORGET_SECONDS = 3_600.0
CLAIM_TRIES = 5  # picks lost to other workers before a claim gives up for now


class SqliteJobStore:
    """The `JobStore` on one SQLite file. Open with `await SqliteJobStore.open(path)`."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        *,
        clock: Clock = time.time,
        max_attempts: int = 3,
        poll_interval: float = 0.05,
    ) -> None:
        self._conn = conn
        self._clock = clock
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self._data_version: int | None = None

    @classmethod
    async def open(cls, path: str | Path, *, migrate: bool = True, **kwargs: Any) -> SqliteJobStore:
        conn = await connect(path, migrate=migrate)
        return cls(conn, **kwargs)

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> SqliteJobStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- plumbing --------------------------------------------------------------------------------

    async def _write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """`body(conn)` in one `BEGIN IMMEDIATE` transaction, run as one call on aiosqlite's thread.

        If the awaiting task is cancelled, the transaction still runs to its COMMIT (or ROLLBACK on an
        error) on the thread: the caller just does not see the result, as if it had been cancelled a
        moment after the commit. So a retried request needs its `request_key`, as it did before.
        """
        return await self._conn._execute(self._run_transaction, 'BEGIN IMMEDIATE', body)

    async def _read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """`body(conn)` in one deferred transaction (its SELECTs see one snapshot), one call on the thread."""
        return await self._conn._execute(self._run_transaction, 'BEGIN', body)

    async def _write_then_read(
        self, write: Callable[[sqlite3.Connection], T], read: Callable[[sqlite3.Connection, T], U]
    ) -> tuple[T, U]:
        """`write` in a write transaction, then `read(conn, written)` in a read one after its commit, one trip."""

        def both() -> tuple[T, U]:
            written = self._run_transaction('BEGIN IMMEDIATE', write)
            return written, self._run_transaction('BEGIN', lambda conn: read(conn, written))

        return await self._conn._execute(both)

    async def _write_tx(self, transaction: tx.Tx[T]) -> T:
        """One of `transactions`' generators, driven as one write transaction on the thread."""
        return await self._write(partial(tx.run, transaction=transaction))

    async def _read_tx(self, transaction: tx.Tx[T]) -> T:
        return await self._read(partial(tx.run, transaction=transaction))

    def _run_transaction(self, begin: str, body: Callable[[sqlite3.Connection], T]) -> T:
        """On aiosqlite's thread: BEGIN, body, COMMIT; ROLLBACK on any error. Never leaves a transaction open."""
        conn = self._conn._conn
        if conn.in_transaction:  # cannot happen through `_write`/`_read`; a stray statement elsewhere must not wedge us
            log.warning('job store: the connection was left inside a transaction; rolling it back')
            conn.execute('ROLLBACK')
        conn.execute(begin)
        try:
            result = body(conn)
            conn.execute('COMMIT')
        except BaseException:
            if conn.in_transaction:
                conn.execute('ROLLBACK')
            raise
        return result

    @staticmethod
    def _one(conn: sqlite3.Connection, query: str, params: Mapping[str, Any] | None = None) -> Any:
        return conn.execute(query, params or {}).fetchone()

    @staticmethod
    def _all(conn: sqlite3.Connection, query: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        return conn.execute(query, params or {}).fetchall()

    def _job(self, conn: sqlite3.Connection, job_id: int) -> Job:
        check_job_id(job_id)  # an id no row can have finds nothing (sqlite3 would raise OverflowError)
        row = self._one(conn, 'SELECT * FROM jobs WHERE id = :job_id', {'job_id': job_id})
        if row is None:
            raise errors.JobNotFound(job_id)
        return Job.from_row(row)

    # ---- settings --------------------------------------------------------------------------------
    # The transactions themselves live in `transactions`, shared with PostgresJobStore.

    async def get_settings(self, guild_id: int | None) -> GuildSettings:
        check_ids(('server', guild_id))
        return (await self._read_tx(tx.settings_and_limits(guild_id, None)))[0]

    async def get_limits(self, guild_id: int | None, user_id: int | None = None) -> Limits:
        check_ids(('server', guild_id), ('user', user_id))
        return (await self._read_tx(tx.settings_and_limits(guild_id, user_id)))[1]

    async def set_setting(
        self, guild_id: int, key: str, value: Any, *, actor_id: int | None, reason: str | None = None
    ) -> None:
        """Set a guild setting (a limit, `blocked_words`, `allowed_channel_ids`, `admin_role_id`); None resets it.

        guild_id 0 sets the bot-wide value beneath every guild's. The change is written to the audit log.
        """
        check_ids(('server', guild_id), ('user', actor_id))
        value = validate_setting(key, value)
        change = tx.set_setting(tx.SQLITE, guild_id, key, value, actor_id=actor_id, reason=reason, now=self._clock())
        await self._write_tx(change)

    async def set_limit(
        self, guild_id: int, key: str, value: Any, *, actor_id: int | None, reason: str | None = None
    ) -> None:
        """`set_setting` restricted to limits, for admin commands that only tune numbers."""
        require_limit(key)
        await self.set_setting(guild_id, key, value, actor_id=actor_id, reason=reason)

    async def set_override(
        self, guild_id: int, user_id: int, key: str, value: Any, *, actor_id: int | None, reason: str | None = None
    ) -> None:
        """Override one limit for one user in a guild (0: everywhere); None removes the override."""
        require_limit(key, ', so it cannot be set per user')
        check_ids(('server', guild_id), ('user', user_id), ('user', actor_id))
        value = validate_setting(key, value)
        now = self._clock()
        change = tx.set_override(tx.SQLITE, guild_id, user_id, key, value, actor_id=actor_id, reason=reason, now=now)
        await self._write_tx(change)

    async def ban(
        self, guild_id: int, user_id: int, *, actor_id: int | None, reason: str | None = None, until: float | None = None
    ) -> None:
        """Refuse this user's new jobs in the guild (0: everywhere), until `until` or an unban."""
        check_ids(('server', guild_id), ('user', user_id), ('user', actor_id))
        change = tx.ban(guild_id, user_id, actor_id=actor_id, reason=reason, until=until, now=self._clock())
        await self._write_tx(change)

    async def unban(self, guild_id: int, user_id: int, *, actor_id: int | None, reason: str | None = None) -> bool:
        check_ids(('server', guild_id), ('user', user_id), ('user', actor_id))
        change = tx.unban(guild_id, user_id, actor_id=actor_id, reason=reason, now=self._clock())
        return await self._write_tx(change)

    async def get_ban(self, guild_id: int | None, user_id: int) -> Ban | None:
        check_ids(('server', guild_id), ('user', user_id))
        now = self._clock()
        return await self._read_tx(tx.active_ban(guild_id, user_id, now))

    async def member_settings(self, user_id: int) -> dict[str, Any]:
        """A member's own defaults (`/settings`), the same in every server."""
        check_ids(('user', user_id))
        return await self._read_tx(tx.member_settings(user_id))

    async def set_member_setting(self, user_id: int, key: str, value: Any) -> dict[str, Any]:
        """Set (None: forget) one of a member's defaults; returns them all. The caller validates the value."""
        check_ids(('user', user_id))
        return await self._write_tx(tx.set_member_setting(user_id, key, value, now=self._clock()))

    async def audit_log(self, guild_id: int, limit: int = 50) -> list[AuditEntry]:
        """The guild's admin changes, newest first."""
        check_ids(('server', guild_id))
        return await self._read_tx(tx.audit_log(guild_id, row_limit(limit)))

    # ---- bot side --------------------------------------------------------------------------------

    async def lineage(self, job_id: int, limit: int = 20) -> list[Job]:
        """The job and the jobs its picture came from (`parent_job_id`), oldest first; raises `JobNotFound`."""
        check_job_id(job_id)
        return await self._read_tx(tx.lineage(job_id, row_limit(limit)))

    async def quota(self, guild_id: int | None, user_id: int) -> Quota:
        check_ids(('server', guild_id), ('user', user_id))
        now = self._clock()
        return await self._read_tx(tx.user_quota(guild_id, user_id, now))

    async def enqueue(self, request: JobRequest, *, fit: FitRequest | None = None) -> Admission:
        """Check every limit and insert the job in one transaction; raise an `AdmissionRefused` error if refused.

        A `request_key` seen before returns the earlier job (`created=False`), so a retried command never
        makes two jobs. `fit(request, settings, limits)`, when given, shapes a new request with the settings
        this transaction read (the bot's blocked-word check, candidates per imagine), so the bot needs no
        transactions of its own for them; it runs on the store's thread, so keep it quick and pure.
        """
        check_request_ids(request)
        now = self._clock()

        def write(conn: sqlite3.Connection) -> tuple[Job, bool, Quota]:
            return tx.run(conn, tx.admit(tx.SQLITE, request, fit, max_attempts=self.max_attempts, now=now))

        # The ranking is read after the commit (it is the costly part, and the write lock need not wait for
        # it), but in the same trip to the thread.
        (job, created, quota), position = await self._write_then_read(
            write, lambda conn, done: self._position(conn, done[0], now)
        )
        return Admission(job, created, position.ahead, position.eta_seconds, quota)

    async def get(self, job_id: int) -> Job:
        def body(conn: sqlite3.Connection) -> Job:
            return self._job(conn, job_id)

        return await self._read(body)

    async def get_many(self, job_ids: Sequence[int]) -> list[Job]:
        """The jobs that exist among `job_ids`, in id order (for a bot watching several)."""
        query = 'SELECT * FROM jobs WHERE id IN (SELECT value FROM json_each(:ids)) ORDER BY id'
        ids = tx.dumps(storable_job_ids(job_ids))  # an id no row can have names no job

        def body(conn: sqlite3.Connection) -> list[Job]:
            return [Job.from_row(row) for row in self._all(conn, query, {'ids': ids})]

        return await self._read(body)

    def _position(self, conn: sqlite3.Connection, job: Job, now: float) -> Position:
        query = 'SELECT count(*) AS n FROM workers WHERE seen_at >= :since'
        workers = (self._one(conn, query, {'since': now - WORKER_ONLINE_SECONDS}))['n']
        if job.status is not JobStatus.QUEUED:
            return Position(0, 0.0 if job.status is JobStatus.RUNNING else None, workers)
        query = f"""
            WITH {ACTIVE_RANKED}
            SELECT count(*) FILTER (WHERE a.status = 'queued'
                                      AND (a.rk, -a.priority, a.last_start, a.id)
                                          < (me.rk, -me.priority, me.last_start, me.id)) AS ahead,
                   count(*) FILTER (WHERE a.status = 'running') AS running
            FROM active AS a, active AS me
            WHERE me.id = :job_id
        """
        row = self._one(conn, query, {'job_id': job.id})
        ahead, running = row['ahead'], row['running']
        # A job's run_seconds is its share of its batch's wall time, so this average is time per job.
        query = """
            SELECT avg(run_seconds) AS per_job FROM (
                SELECT run_seconds FROM jobs
                WHERE status = 'succeeded' AND run_seconds IS NOT NULL
                ORDER BY finished_at DESC LIMIT :recent
            )
        """
        per_job = (self._one(conn, query, {'recent': RECENT_RUNS_FOR_ETA}))['per_job']
        eta = None if per_job is None or workers == 0 else per_job * ((ahead + running) / workers)
        return Position(ahead, eta, workers)

    async def position(self, job_id: int) -> Position:
        """Jobs ahead in the claim order, and an ETA from recent run times and the workers online."""
        now = self._clock()

        def body(conn: sqlite3.Connection) -> Position:
            return self._position(conn, self._job(conn, job_id), now)

        return await self._read(body)

    async def cancel(self, job_id: int, *, by_user_id: int | None = None) -> Job:
        """Cancel a queued job at once; ask the worker to stop a running one (it ends cancelled at its next check).

        `by_user_id` must own the job; pass None for admins. Cancelling twice is harmless.
        """
        now = self._clock()

        def body(conn: sqlite3.Connection) -> Job:
            job = self._job(conn, job_id)
            if by_user_id is not None and by_user_id != job.user_id:
                raise errors.NotJobOwner()
            if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
                raise errors.JobAlreadyFinished(job_id, job.status.value)
            query = """
                UPDATE jobs SET status = 'cancelled', finished_at = :now
                WHERE id = :job_id AND status = 'queued'
            """
            conn.execute(query, {'job_id': job_id, 'now': now})
            query = "UPDATE jobs SET cancel_requested = 1 WHERE id = :job_id AND status = 'running'"
            conn.execute(query, {'job_id': job_id})
            return self._job(conn, job_id)

        return await self._write(body)

    async def user_jobs(self, user_id: int, *, active_only: bool = True, limit: int = 20) -> list[Job]:
        """The user's jobs, newest first (only queued and running ones unless `active_only=False`)."""
        query = """
            SELECT * FROM jobs
            WHERE user_id = :user_id AND (NOT :active_only OR status IN ('queued', 'running'))
            ORDER BY id DESC LIMIT :limit
        """
        check_ids(('user', user_id))
        params = {'user_id': user_id, 'active_only': active_only, 'limit': row_limit(limit)}

        def body(conn: sqlite3.Connection) -> list[Job]:
            rows = self._all(conn, query, params)
            return [Job.from_row(row) for row in rows]

        return await self._read(body)

    async def queue_snapshot(self, limit: int = 20) -> list[Job]:
        """Running jobs, then queued ones in the order workers will take them."""
        query = f"""
            WITH {ACTIVE_RANKED}
            SELECT jobs.* FROM active JOIN jobs USING (id)
            ORDER BY CASE active.status WHEN 'running' THEN 0 ELSE 1 END,
                     active.rk, active.priority DESC, active.last_start, active.id
            LIMIT :limit
        """

        def body(conn: sqlite3.Connection) -> list[Job]:
            return [Job.from_row(row) for row in self._all(conn, query, {'limit': row_limit(limit)})]

        return await self._read(body)

    async def set_status_message(self, job_id: int, message_id: int) -> None:
        """Remember the message the bot edits with this job's progress, so a restarted bot finds it.
        A job id no row can have changes nothing, as an unknown one does."""
        check_ids(('message', message_id))
        if not fits(job_id):
            return

        def body(conn: sqlite3.Connection) -> None:
            query = 'UPDATE jobs SET status_message_id = :message_id WHERE id = :job_id'
            conn.execute(query, {'job_id': job_id, 'message_id': message_id})

        await self._write(body)

    async def _read_data_version(self) -> int:
        return await self._conn._execute(lambda: self._conn._conn.execute('PRAGMA data_version').fetchone()[0])

    async def wait_for_change(self, timeout: float) -> bool:
        """Wait until another connection commits (True) or `timeout` passes (False). A hint: re-read after it.

        The first call only records where the database stands and returns False at once.
        """
        version = await self._read_data_version()
        if self._data_version is None:
            self._data_version = version
            return False
        deadline = time.monotonic() + timeout
        while version == self._data_version:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(self.poll_interval, remaining))
            version = await self._read_data_version()
        self._data_version = version
        return True

    # ---- worker side -----------------------------------------------------------------------------

    async def register_worker(self, worker_id: str, info: Mapping[str, Any]) -> None:
        now = self._clock()

        def body(conn: sqlite3.Connection) -> None:
            query = """
                INSERT INTO workers (id, info, started_at, seen_at) VALUES (:worker_id, :info, :now, :now)
                ON CONFLICT (id) DO UPDATE SET info = excluded.info, seen_at = excluded.seen_at
            """
            conn.execute(query, {'worker_id': worker_id, 'info': tx.dumps(dict(info)), 'now': now})

        await self._write(body)

    async def unregister_worker(self, worker_id: str) -> None:
        def body(conn: sqlite3.Connection) -> None:
            conn.execute('DELETE FROM workers WHERE id = :worker_id', {'worker_id': worker_id})

        await self._write(body)

    async def workers_online(self) -> list[dict[str, Any]]:
        now = self._clock()
        query = 'SELECT * FROM workers WHERE seen_at >= :since ORDER BY started_at'

        def body(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = self._all(conn, query, {'since': now - WORKER_ONLINE_SECONDS})
            return [{**dict(row), 'info': json.loads(row['info'])} for row in rows]

        return await self._read(body)

    def _expire_leases(self, conn: sqlite3.Connection, now: float) -> SweepReport:
        """Jobs whose worker stopped renewing: back to the queue, or failed once they used every attempt.

        A job that kills its worker every time (a "poison" job) ends here as failed after `max_attempts`,
        instead of taking the queue down with it forever.
        """
        query = """
            UPDATE jobs SET
                status = CASE
                    WHEN cancel_requested THEN 'cancelled'
                    WHEN attempt - handbacks >= max_attempts THEN 'failed'
                    ELSE 'queued' END,
                error = CASE
                    WHEN cancel_requested THEN error
                    WHEN attempt - handbacks >= max_attempts
                    THEN 'This job stopped its worker ' || (attempt - handbacks) || ' times, so it was given up. '
                         || 'Try a different prompt or settings.'
                    ELSE error END,
                finished_at = CASE WHEN cancel_requested OR attempt - handbacks >= max_attempts THEN :now END,
                available_at = :now,
                worker_id = NULL,
                lease_until = NULL
            WHERE status = 'running' AND lease_until < :now
            RETURNING id, status
        """
        rows = self._all(conn, query, {'now': now})
        report = SweepReport()
        for row in rows:
            {'queued': report.requeued, 'failed': report.failed, 'cancelled': report.cancelled}[row['status']].append(
                row['id']
            )
        return report

    async def claim(self, worker_id: str, caps: WorkerCaps, lease_seconds: float) -> list[Job]:
        """Lease the next job in fair order, plus up to `caps.max_batch - 1` more with the same compat key.

        The ranking (O(active jobs)) is read from a snapshot *outside* the write lock, so the bot's writes
        never queue behind it; the short write transaction then takes only the picked rows that are still
        queued (`status = 'queued'` re-checked on the rows it changes: the guard that PostgreSQL needs at
        the `FOR UPDATE` level, see `edalle/jobs/postgres.py`). If another worker took them meanwhile, pick again.
        Expired leases are put back first, so no janitor is needed for liveness.
        """
        pick, params = pick_batch_query(caps.compat_prefixes)
        batch = max(1, caps.max_batch)

        def read(conn: sqlite3.Connection, now: float) -> tuple[bool, list[Any]]:
            query = "SELECT 1 FROM jobs WHERE status = 'running' AND lease_until < :now LIMIT 1"
            expired = self._one(conn, query, {'now': now}) is not None
            return expired, [] if expired else self._all(conn, pick, {**params, 'now': now, 'batch': batch})

        def take(conn: sqlite3.Connection, now: float, ids: list[int]) -> list[Any]:
            query = """
                UPDATE jobs SET
                    status = 'running', attempt = attempt + 1, worker_id = :worker_id, lease_until = :lease_until,
                    started_at = :now, stage = NULL, step = NULL, total = NULL, preview_path = NULL,
                    progress_at = NULL
                WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'queued' AND available_at <= :now
                RETURNING *
            """
            params_update = {'worker_id': worker_id, 'lease_until': now + lease_seconds, 'now': now, 'ids': tx.dumps(ids)}
            rows = self._all(conn, query, params_update)
            if rows:
                self._seen(conn, worker_id, now)
            return rows

        for _ in range(CLAIM_TRIES):
            now = self._clock()
            expired, picked = await self._read(partial(read, now=now))
            if expired:
                await self._write(partial(self._expire_leases, now=now))
                continue
            if not picked:
                return []
            ids = [row['id'] for row in picked] if picked[0]['kind'] in tx.batch_kinds(caps) else [picked[0]['id']]
            rows = await self._write(partial(take, now=now, ids=ids))
            if rows:
                return sorted((Job.from_row(row) for row in rows), key=lambda job: job.id)
        return []

    def _seen(self, conn: sqlite3.Connection, worker_id: str, now: float) -> None:
        conn.execute('UPDATE workers SET seen_at = :now WHERE id = :worker_id', {'worker_id': worker_id, 'now': now})

    _FENCE = "id = :job_id AND attempt = :attempt AND worker_id = :worker_id AND status = 'running'"

    @staticmethod
    def _fence_params(lease: Lease) -> dict[str, Any]:
        return {'job_id': lease.job_id, 'attempt': lease.attempt, 'worker_id': lease.worker_id}

    async def renew(self, leases: Sequence[Lease], lease_seconds: float) -> list[Ack]:
        """Extend each lease; an `Ack` per lease says whether it still holds and whether a cancel was asked."""
        now = self._clock()

        def body(conn: sqlite3.Connection) -> list[Ack]:
            acks = []
            for lease in leases:
                query = f'UPDATE jobs SET lease_until = :lease_until WHERE {self._FENCE} RETURNING cancel_requested'
                row = self._one(conn, query, {**self._fence_params(lease), 'lease_until': now + lease_seconds})
                acks.append(Ack(False) if row is None else Ack(True, bool(row['cancel_requested'])))
            if leases:
                self._seen(conn, leases[0].worker_id, now)
            return acks

        return await self._write(body)

    async def progress(self, lease: Lease, progress: Progress, lease_seconds: float) -> Ack:
        """Record the stage, step n/N and preview, and renew the lease. Call it about once a second at most."""
        now = self._clock()

        def body(conn: sqlite3.Connection) -> Ack:
            query = f"""
                UPDATE jobs SET lease_until = :lease_until, stage = :stage, step = :step, total = :total,
                                preview_path = coalesce(:preview_path, preview_path), progress_at = :now
                WHERE {self._FENCE}
                RETURNING cancel_requested
            """
            params = {
                **self._fence_params(lease),
                'lease_until': now + lease_seconds,
                'stage': progress.stage,
                'step': progress.step,
                'total': progress.total,
                'preview_path': progress.preview_path,
                'now': now,
            }
            row = self._one(conn, query, params)
            self._seen(conn, lease.worker_id, now)
            return Ack(False) if row is None else Ack(True, bool(row['cancel_requested']))

        return await self._write(body)

    async def complete(self, lease: Lease, result: Mapping[str, Any], run_seconds: float) -> JobStatus | None:
        """Store the result summary. Returns the final status (cancelled if a cancel came in meanwhile), or
        None when fenced off: the lease was lost, and the caller must discard its files."""
        now = self._clock()

        def body(conn: sqlite3.Connection) -> JobStatus | None:
            query = f"""
                UPDATE jobs SET
                    status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'succeeded' END,
                    result = CASE WHEN cancel_requested THEN NULL ELSE :result END,
                    error = NULL, finished_at = :now, run_seconds = :run_seconds, lease_until = NULL
                WHERE {self._FENCE}
                RETURNING status
            """
            params = {**self._fence_params(lease), 'result': tx.dumps(dict(result)), 'run_seconds': run_seconds, 'now': now}
            row = self._one(conn, query, params)
            return None if row is None else JobStatus(row['status'])

        return await self._write(body)

    async def fail(self, lease: Lease, error: str, *, retryable: bool, retry_after: float = 0.0) -> JobStatus | None:
        """The run failed. Retryable errors go back to the queue while attempts are left; returns the new
        status, or None when fenced off. `error` is shown to the user, so keep it a plain sentence."""
        now = self._clock()

        def body(conn: sqlite3.Connection) -> JobStatus | None:
            query = f'SELECT attempt, handbacks, max_attempts, cancel_requested FROM jobs WHERE {self._FENCE}'
            row = self._one(conn, query, self._fence_params(lease))
            if row is None:
                return None
            if row['cancel_requested']:
                status = JobStatus.CANCELLED
            elif retryable and row['attempt'] - row['handbacks'] < row['max_attempts']:
                status = JobStatus.QUEUED
            else:
                status = JobStatus.FAILED
            query = f"""
                UPDATE jobs SET status = :status, error = :error, available_at = :available_at,
                                finished_at = :finished_at, worker_id = NULL, lease_until = NULL
                WHERE {self._FENCE}
            """
            params = {
                **self._fence_params(lease),
                'status': status.value,
                'error': error,
                'available_at': now + retry_after,
                'finished_at': now if status.is_final else None,
            }
            conn.execute(query, params)
            return status

        return await self._write(body)

    async def finish_cancelled(self, lease: Lease) -> bool:
        """The worker stopped the job because a cancel was asked."""
        now = self._clock()

        def body(conn: sqlite3.Connection) -> bool:
            query = f"UPDATE jobs SET status = 'cancelled', finished_at = :now, lease_until = NULL WHERE {self._FENCE}"
            cursor = conn.execute(query, {**self._fence_params(lease), 'now': now})
            return cursor.rowcount > 0

        return await self._write(body)

    async def release(self, lease: Lease) -> bool:
        """Hand a job back untouched (worker shutting down): queued again, and the attempt does not count."""
        now = self._clock()

        def body(conn: sqlite3.Connection) -> bool:
            query = f"""
                UPDATE jobs SET
                    status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
                    finished_at = CASE WHEN cancel_requested THEN :now END,
                    handbacks = handbacks + 1, available_at = :now, worker_id = NULL, lease_until = NULL
                WHERE {self._FENCE}
            """
            cursor = conn.execute(query, {**self._fence_params(lease), 'now': now})
            return cursor.rowcount > 0

        return await self._write(body)

    # ---- delivery --------------------------------------------------------------------------------

    async def undelivered(self, limit: int = 50) -> list[Job]:
        """Finished jobs not yet posted, oldest first."""
        query = """
            SELECT * FROM jobs
            WHERE delivered_at IS NULL AND status IN ('succeeded', 'failed', 'cancelled')
            ORDER BY id LIMIT :limit
        """

        def body(conn: sqlite3.Connection) -> list[Job]:
            return [Job.from_row(row) for row in self._all(conn, query, {'limit': row_limit(limit)})]

        return await self._read(body)

    async def claim_deliveries(self, owner: str, limit: int, lease_seconds: float) -> list[Delivery]:
        """Lease up to `limit` finished, unposted jobs to one poster; another poster skips them until the
        lease expires. Post with `job.delivery_nonce`, then `mark_delivered`."""
        now = self._clock()

        def body(conn: sqlite3.Connection) -> list[Any]:
            query = """
                UPDATE jobs SET delivery_owner = :owner, delivery_attempt = delivery_attempt + 1,
                                delivery_until = :delivery_until
                WHERE id IN (
                    SELECT id FROM jobs
                    WHERE delivered_at IS NULL AND status IN ('succeeded', 'failed', 'cancelled')
                      AND (delivery_until IS NULL OR delivery_until < :now)
                    ORDER BY id LIMIT :limit
                )
                RETURNING *
            """
            params = {'owner': owner, 'delivery_until': now + lease_seconds, 'now': now, 'limit': limit}
            return self._all(conn, query, params)

        rows = await self._write(body)
        jobs = sorted((Job.from_row(row) for row in rows), key=lambda job: job.id)
        return [Delivery(job, owner, job.delivery_attempt, now + lease_seconds) for job in jobs]

    async def mark_delivered(self, delivery: Delivery, message_id: int | None) -> bool:
        """Record the post. False: this delivery lease was lost (another poster took the job over)."""
        now = self._clock()

        def body(conn: sqlite3.Connection) -> bool:
            query = """
                UPDATE jobs SET delivered_at = :now, result_message_id = :message_id, delivery_until = NULL
                WHERE id = :job_id AND delivery_owner = :owner AND delivery_attempt = :attempt AND delivered_at IS NULL
            """
            params = {
                'now': now,
                'message_id': message_id,
                'job_id': delivery.job.id,
                'owner': delivery.owner,
                'attempt': delivery.attempt,
            }
            cursor = conn.execute(query, params)
            return cursor.rowcount > 0

        return await self._write(body)

    # ---- maintenance -----------------------------------------------------------------------------

    async def sweep(self) -> SweepReport:
        """Expire stale leases (claims do this too) and forget workers long gone. Safe to run any time."""
        now = self._clock()

        def body(conn: sqlite3.Connection) -> SweepReport:
            report = self._expire_leases(conn, now)
            query = 'DELETE FROM workers WHERE seen_at < :before'
            cursor = conn.execute(query, {'before': now - WORKER_FORGET_SECONDS})
            return SweepReport(report.requeued, report.failed, report.cancelled, cursor.rowcount)

        return await self._write(body)
