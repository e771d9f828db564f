"""`PostgresJobStore`: the job store on PostgreSQL, for a bot and GPU workers on many hosts.

The same `JobStore` verbs, rows and meanings as `SqliteJobStore` (one contract test suite runs against
both); what differs is how writers are kept apart. SQLite has one writer at a time, so a check-and-write
is atomic by construction. Here many transactions run at once, so:

- a claim locks the rows it takes with `FOR UPDATE OF j SKIP LOCKED`: a second claimer skips them and
  takes the next ones in fair order instead of waiting. The eligibility test (`status = 'queued' AND
  available_at <= now`) is repeated on the locked table *at the FOR UPDATE level*: under READ COMMITTED
  PostgreSQL re-checks only that level's predicates against the newest row version once it holds the
  lock, so a test left inside the ranking CTE (an old snapshot) lets two claimers take the same job
  (5–12 duplicates in 100 jobs with 8 claimers when we tried it). `tests/test_postgres_claims.py` keeps it so.
- an enqueue takes a transaction-scoped advisory lock on its user first, so two bot processes cannot
  both pass that user's pending/daily limits with the last free slot. The global queue cap is a count
  and may overshoot by one job per concurrent enqueuer: it is a cap, not worth a hot counter row every enqueue locks.
- every write that another process may want to see sends `NOTIFY edalle_jobs`; `wait_for_change`
  LISTENs on a connection of its own instead of polling. A notification is a hint: re-read the rows.

Times are Unix seconds, as on SQLite, but read from the database server's clock (`DbClock`, re-synced
every minute), so workers on many hosts agree on lease deadlines whatever their own clocks say.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, TypeVar

import asyncpg

from edalle import errors
from edalle.db import Migration, load_migrations, migrations_dir
from edalle.jobs import transactions as tx
from edalle.jobs.ids import check_ids, check_job_id, check_request_ids, fits, row_limit, storable_job_ids
from edalle.jobs.limits import (
    GuildSettings,
    Limits,
    Quota,
    require_limit,
    validate_setting,
)
from edalle.jobs.ranking import ACTIVE_RANKED, FAIR_ORDER
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

MIGRATIONS_DIR = migrations_dir('postgres')
MIGRATION_LOCK = 0x6564_616C  # 'edal': one advisory lock id for "migrating", whoever starts first
USER_LOCK = 0x7573_6572  # 'user': advisory lock namespace for one user's admission checks
CHANNEL = 'edalle_jobs'

RECENT_RUNS_FOR_ETA = 50
WORKER_ONLINE_SECONDS = 90.0
WORKER_FORGET_SECONDS = 3_600.0
CLAIM_TRIES = 5  # rounds in which every pick was held by other claimers before a claim gives up for now
CLAIM_WINDOW = 64  # fair-order candidates a claim may lock from: others' locked rows are skipped, not waited for
CLOCK_RESYNC_SECONDS = 60.0


_NAMED = re.compile(r'(?<![:\w]):([A-Za-z_]\w*)')


@lru_cache(maxsize=256)
def _positional(query: str) -> tuple[str, tuple[str, ...]]:
    """`:name` parameters (the style both stores' SQL is written in) → asyncpg's `$1`; `::type` casts kept."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f'${names.index(match[1]) + 1}'

    return _NAMED.sub(number, query), tuple(names)


def _bind(query: str, params: Mapping[str, Any] | None) -> list[Any]:
    """`[text, *args]` for asyncpg's `fetch(query, *args)`."""
    text, names = _positional(query)
    params = params or {}
    return [text, *(params[name] for name in names)]


def _rowcount(status: str) -> int:
    """asyncpg's command tag ('UPDATE 3', 'DELETE 0', 'INSERT 0 1') → the row count."""
    last = status.rsplit(' ', 1)[-1]
    return int(last) if last.isdigit() else 0


def _user_lock_key(user_id: int) -> int:
    """A user id (a 64-bit snowflake) folded into the int4 second key of `pg_advisory_xact_lock(int4, int4)`.
    A collision only makes two users' enqueues wait for each other."""
    folded = (user_id ^ (user_id >> 32)) & 0xFFFF_FFFF
    return folded - (1 << 32) if folded >= 1 << 31 else folded


def _compat_filter(prefixes: Sequence[str], column: str = 'compat_key') -> tuple[str, dict[str, Any]]:
    """`starts_with(compat_key, :compat_0) OR …`; ranking.compat_filter's `length(:p)` is ambiguous to
    PostgreSQL's type inference for an untyped parameter, so the dialect gets its own spelling."""
    if not prefixes:
        return 'true', {}
    terms, params = [], {}
    for i, prefix in enumerate(prefixes):
        terms.append(f'starts_with({column}, :compat_{i}::text)')
        params[f'compat_{i}'] = prefix
    return '(' + ' OR '.join(terms) + ')', params


class DbClock:
    """Unix seconds on the database server's clock: the local clock plus an offset measured at open and
    re-measured every minute. Half a round trip of error, instead of however far a GPU host has drifted."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.synced_at = float('-inf')

    def __call__(self) -> float:
        return time.time() + self.offset

    @property
    def stale(self) -> bool:
        return time.monotonic() - self.synced_at > CLOCK_RESYNC_SECONDS

    async def sync(self, conn: asyncpg.Connection) -> None:
        before = time.time()
        server = await conn.fetchval('SELECT extract(epoch FROM clock_timestamp())::float8')
        after = time.time()
        self.offset = server - (before + after) / 2
        self.synced_at = time.monotonic()


async def apply_migrations(conn: asyncpg.Connection, migrations: list[Migration], *, where: str = '?') -> list[int]:
    """Apply pending migrations, each in one transaction, under an advisory lock so that several
    processes starting at once migrate once. Refuses a schema newer than `migrations` (SchemaTooNew)."""
    known = migrations[-1].version if migrations else 0
    applied_now = []
    async with conn.transaction():
        await conn.execute('SELECT pg_advisory_xact_lock($1)', MIGRATION_LOCK)
        query = """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    INTEGER PRIMARY KEY,
                name       TEXT NOT NULL,
                checksum   TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )
        """
        await conn.execute(query)
        done = {
            row['version']: row['checksum'] for row in await conn.fetch('SELECT version, checksum FROM schema_migrations')
        }
        if done and max(done) > known:
            raise errors.SchemaTooNew(where, max(done), known)
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    log.warning(
                        'migration %04d_%s was changed after it was applied to %s', migration.version, migration.name, where
                    )
                continue
            async with conn.transaction():  # a savepoint: the whole run is one transaction under the lock
                await conn.execute(migration.sql)  # the simple protocol runs a multi-statement script
                query = 'INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)'
                await conn.execute(query, migration.version, migration.name, migration.checksum)
            log.info('applied migration %04d_%s to %s', migration.version, migration.name, where)
            applied_now.append(migration.version)
    return applied_now


async def schema_version(conn: asyncpg.Connection) -> int:
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return 0
    return await conn.fetchval('SELECT coalesce(max(version), 0) FROM schema_migrations')


def _safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r'://([^:/@]+):[^@]*@', r'://\1:***@', url)


class PostgresJobStore:
    """The `JobStore` on PostgreSQL. Open with `await PostgresJobStore.open('postgresql://…')`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: str,
        *,
        clock: Clock | None = None,
        max_attempts: int = 3,
    ) -> None:
        self._pool = pool
        self._url = url
        self._db_clock = DbClock() if clock is None else None
        self._clock: Clock = clock or self._db_clock  # type: ignore[assignment]
        self.max_attempts = max_attempts
        self._token = secrets.token_hex(6)  # our own notifications are not "another process committed"
        self._listener: asyncpg.Connection | None = None
        self._changed = asyncio.Event()
        self._listener_lock = asyncio.Lock()
        self._listened = False

    @classmethod
    async def open(
        cls, url: str, *, migrate: bool = True, pool_size: int = 4, migrations: list[Migration] | None = None, **kwargs: Any
    ) -> PostgresJobStore:
        """Connect (a small pool), apply the migrations (or only check the version), sync the clock."""
        known = load_migrations(MIGRATIONS_DIR) if migrations is None else migrations
        # jit off: the claim's plan costs enough to trigger JIT, which then spends ~40 ms compiling a 5 ms query
        settings = {'jit': 'off', 'application_name': 'edalle'}
        pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size, command_timeout=60, server_settings=settings)
        try:
            async with pool.acquire() as conn:
                if migrate:
                    await apply_migrations(conn, known, where=_safe_url(url))
                else:
                    version = await schema_version(conn)
                    if known and version > known[-1].version:
                        raise errors.SchemaTooNew(_safe_url(url), version, known[-1].version)
            store = cls(pool, url, **kwargs)
            if store._db_clock is not None:
                async with pool.acquire() as conn:
                    await store._db_clock.sync(conn)
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            try:
                await listener.close(timeout=5)
            except Exception:  # already broken: nothing to tidy
                listener.terminate()
        await self._pool.close()

    async def __aenter__(self) -> PostgresJobStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- plumbing --------------------------------------------------------------------------------

    async def _maybe_resync(self, conn: asyncpg.Connection) -> None:
        if self._db_clock is not None and self._db_clock.stale:
            await self._db_clock.sync(conn)

    @asynccontextmanager
    async def _transaction(self, *, notify: bool = True) -> AsyncIterator[asyncpg.Connection]:
        """One READ COMMITTED write transaction on a pooled connection; NOTIFY at commit unless told not to."""
        async with self._pool.acquire() as conn:
            await self._maybe_resync(conn)
            async with conn.transaction():
                yield conn
                if notify:
                    await conn.execute('SELECT pg_notify($1, $2)', CHANNEL, self._token)

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[asyncpg.Connection]:
        """Reads in one REPEATABLE READ, read-only transaction, so several SELECTs see one snapshot."""
        async with self._pool.acquire() as conn:
            await self._maybe_resync(conn)
            async with conn.transaction(isolation='repeatable_read', readonly=True):
                yield conn

    @staticmethod
    async def _one(conn: asyncpg.Connection, query: str, params: Mapping[str, Any] | None = None) -> Any:
        return await conn.fetchrow(*_bind(query, params))

    @staticmethod
    async def _all(conn: asyncpg.Connection, query: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        return list(await conn.fetch(*_bind(query, params)))

    @staticmethod
    async def _execute(conn: asyncpg.Connection, query: str, params: Mapping[str, Any] | None = None) -> int:
        return _rowcount(await conn.execute(*_bind(query, params)))

    async def _job(self, conn: asyncpg.Connection, job_id: int, *, for_update: bool = False) -> Job:
        check_job_id(job_id)  # an id no row can have finds nothing (a BIGINT parameter would raise DataError)
        query = 'SELECT * FROM jobs WHERE id = :job_id' + (' FOR UPDATE' if for_update else '')
        row = await self._one(conn, query, {'job_id': job_id})
        if row is None:
            raise errors.JobNotFound(job_id)
        return Job.from_row(row)

    def _now(self) -> float:
        return float(self._clock())

    async def _run(self, conn: asyncpg.Connection, transaction: tx.Tx[T]) -> T:
        """Drive one of `transactions`' generators on this connection (inside the caller's transaction)."""
        result: Any = None
        while True:
            try:
                statement = transaction.send(result)
            except StopIteration as done:
                return done.value
            if statement.returns == 'one':
                result = await self._one(conn, statement.query, statement.params)
            elif statement.returns == 'all':
                result = await self._all(conn, statement.query, statement.params)
            else:
                result = await self._execute(conn, statement.query, statement.params)

    async def _write_tx(self, transaction: tx.Tx[T]) -> T:
        async with self._transaction() as conn:
            return await self._run(conn, transaction)

    async def _read_tx(self, transaction: tx.Tx[T]) -> T:
        async with self._reading() as conn:
            return await self._run(conn, transaction)

    # ---- settings --------------------------------------------------------------------------------
    # The transactions themselves live in `transactions`, shared with SqliteJobStore.

    async def get_settings(self, guild_id: int | None) -> GuildSettings:
        check_ids(('server', guild_id))
        return (await self._read_tx(tx.settings_and_limits(guild_id, None)))[0]

    async def get_limits(self, guild_id: int | None, user_id: int | None = None) -> Limits:
        check_ids(('server', guild_id), ('user', user_id))
        return (await self._read_tx(tx.settings_and_limits(guild_id, user_id)))[1]

    async def set_setting(
        self, guild_id: int, key: str, value: Any, *, actor_id: int | None, reason: str | None = None
    ) -> None:
        """Set a guild setting; None resets it. guild_id 0 is the bot-wide layer. Audited."""
        check_ids(('server', guild_id), ('user', actor_id))
        value = validate_setting(key, value)
        change = tx.set_setting(tx.POSTGRES, guild_id, key, value, actor_id=actor_id, reason=reason, now=self._now())
        await self._write_tx(change)

    async def set_limit(
        self, guild_id: int, key: str, value: Any, *, actor_id: int | None, reason: str | None = None
    ) -> None:
        """`set_setting` restricted to limits."""
        require_limit(key)
        await self.set_setting(guild_id, key, value, actor_id=actor_id, reason=reason)

    async def set_override(
        self, guild_id: int, user_id: int, key: str, value: Any, *, actor_id: int | None, reason: str | None = None
    ) -> None:
        """Override one limit for one user in a guild (0: everywhere); None removes the override."""
        require_limit(key, ', so it cannot be set per user')
        check_ids(('server', guild_id), ('user', user_id), ('user', actor_id))
        value = validate_setting(key, value)
        now = self._now()
        change = tx.set_override(tx.POSTGRES, guild_id, user_id, key, value, actor_id=actor_id, reason=reason, now=now)
        await self._write_tx(change)

    async def ban(
        self, guild_id: int, user_id: int, *, actor_id: int | None, reason: str | None = None, until: float | None = None
    ) -> None:
        """Refuse this user's new jobs in the guild (0: everywhere), until `until` or an unban."""
        check_ids(('server', guild_id), ('user', user_id), ('user', actor_id))
        await self._write_tx(tx.ban(guild_id, user_id, actor_id=actor_id, reason=reason, until=until, now=self._now()))

    async def unban(self, guild_id: int, user_id: int, *, actor_id: int | None, reason: str | None = None) -> bool:
        check_ids(('server', guild_id), ('user', user_id), ('user', actor_id))
        return await self._write_tx(tx.unban(guild_id, user_id, actor_id=actor_id, reason=reason, now=self._now()))

    async def get_ban(self, guild_id: int | None, user_id: int) -> Ban | None:
        check_ids(('server', guild_id), ('user', user_id))
        return await self._read_tx(tx.active_ban(guild_id, user_id, self._now()))

    async def member_settings(self, user_id: int) -> dict[str, Any]:
        """A member's own defaults (`/settings`), the same in every server."""
        check_ids(('user', user_id))
        return await self._read_tx(tx.member_settings(user_id))

    async def set_member_setting(self, user_id: int, key: str, value: Any) -> dict[str, Any]:
        """Set (None: forget) one of a member's defaults; returns them all. The caller validates the value."""
        check_ids(('user', user_id))
        return await self._write_tx(tx.set_member_setting(user_id, key, value, now=self._now()))

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
        return await self._read_tx(tx.user_quota(guild_id, user_id, self._now()))

    async def enqueue(self, request: JobRequest, *, fit: FitRequest | None = None) -> Admission:
        """Check every limit and insert the job in one transaction; raise an `AdmissionRefused` error if refused.

        The transaction first takes the user's advisory lock: two bot processes enqueueing for one user
        run their checks one after the other, as SQLite's single writer would. A `request_key` seen
        before returns the earlier job (`created=False`). `fit` reshapes a new request with the settings
        read here, as in `SqliteJobStore.enqueue`.
        """
        check_request_ids(request)
        now = self._now()
        async with self._transaction() as conn:
            await conn.execute('SELECT pg_advisory_xact_lock($1, $2)', USER_LOCK, _user_lock_key(request.user_id))
            admit = tx.admit(tx.POSTGRES, request, fit, max_attempts=self.max_attempts, now=now)
            job, created, quota = await self._run(conn, admit)
        async with self._reading() as conn:
            position = await self._position(conn, job, now)
        return Admission(job, created, position.ahead, position.eta_seconds, quota)

    async def get(self, job_id: int) -> Job:
        async with self._reading() as conn:
            return await self._job(conn, job_id)

    async def get_many(self, job_ids: Sequence[int]) -> list[Job]:
        """The jobs that exist among `job_ids`, in id order."""
        query = 'SELECT * FROM jobs WHERE id = ANY(:ids::bigint[]) ORDER BY id'
        async with self._reading() as conn:
            rows = await self._all(conn, query, {'ids': storable_job_ids(job_ids)})
        return [Job.from_row(row) for row in rows]

    async def _position(self, conn: asyncpg.Connection, job: Job, now: float) -> Position:
        query = 'SELECT count(*) AS n FROM workers WHERE seen_at >= :since'
        workers = (await self._one(conn, query, {'since': now - WORKER_ONLINE_SECONDS}))['n']
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
        row = await self._one(conn, query, {'job_id': job.id})
        ahead, running = row['ahead'], row['running']
        query = """
            SELECT avg(run_seconds) AS per_job FROM (
                SELECT run_seconds FROM jobs
                WHERE status = 'succeeded' AND run_seconds IS NOT NULL
                ORDER BY finished_at DESC LIMIT :recent
            ) AS recent
        """
        per_job = (await self._one(conn, query, {'recent': RECENT_RUNS_FOR_ETA}))['per_job']
        eta = None if per_job is None or workers == 0 else per_job * ((ahead + running) / workers)
        return Position(ahead, eta, workers)

    async def position(self, job_id: int) -> Position:
        """Jobs ahead in the claim order, and an ETA from recent run times and the workers online."""
        now = self._now()
        async with self._reading() as conn:
            return await self._position(conn, await self._job(conn, job_id), now)

    async def cancel(self, job_id: int, *, by_user_id: int | None = None) -> Job:
        """Cancel a queued job at once; ask the worker to stop a running one. Cancelling twice is harmless."""
        now = self._now()
        async with self._transaction() as conn:
            job = await self._job(conn, job_id, for_update=True)  # no claim can take it between check and write
            if by_user_id is not None and by_user_id != job.user_id:
                raise errors.NotJobOwner()
            if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
                raise errors.JobAlreadyFinished(job_id, job.status.value)
            query = "UPDATE jobs SET status = 'cancelled', finished_at = :now WHERE id = :job_id AND status = 'queued'"
            await self._execute(conn, query, {'job_id': job_id, 'now': now})
            query = "UPDATE jobs SET cancel_requested = true WHERE id = :job_id AND status = 'running'"
            await self._execute(conn, query, {'job_id': job_id})
            return await self._job(conn, job_id)

    async def user_jobs(self, user_id: int, *, active_only: bool = True, limit: int = 20) -> list[Job]:
        """The user's jobs, newest first (only queued and running ones unless `active_only=False`)."""
        query = """
            SELECT * FROM jobs
            WHERE user_id = :user_id AND (NOT :active_only::boolean OR status IN ('queued', 'running'))
            ORDER BY id DESC LIMIT :limit
        """
        check_ids(('user', user_id))
        async with self._reading() as conn:
            rows = await self._all(conn, query, {'user_id': user_id, 'active_only': active_only, 'limit': row_limit(limit)})
        return [Job.from_row(row) for row in rows]

    async def queue_snapshot(self, limit: int = 20) -> list[Job]:
        """Running jobs, then queued ones in the order workers will take them."""
        query = f"""
            WITH {ACTIVE_RANKED}
            SELECT jobs.* FROM active JOIN jobs USING (id)
            ORDER BY CASE active.status WHEN 'running' THEN 0 ELSE 1 END,
                     active.rk, active.priority DESC, active.last_start, active.id
            LIMIT :limit
        """
        async with self._reading() as conn:
            rows = await self._all(conn, query, {'limit': row_limit(limit)})
        return [Job.from_row(row) for row in rows]

    async def set_status_message(self, job_id: int, message_id: int) -> None:
        """Remember the message the bot edits with this job's progress, so a restarted bot finds it.
        A job id no row can have changes nothing, as an unknown one does."""
        check_ids(('message', message_id))
        if not fits(job_id):
            return
        async with self._transaction(notify=False) as conn:
            query = 'UPDATE jobs SET status_message_id = :message_id WHERE id = :job_id'
            await self._execute(conn, query, {'job_id': job_id, 'message_id': message_id})

    # ---- wake-ups --------------------------------------------------------------------------------

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload != self._token:
            self._changed.set()

    def _on_listener_lost(self, _conn: object) -> None:
        self._listener = None
        self._changed.set()  # we may have missed notifications: tell the caller to re-read

    async def _listen(self) -> None:
        async with self._listener_lock:
            if self._listener is None:
                conn = await asyncpg.connect(self._url)
                await conn.add_listener(CHANNEL, self._on_notify)
                conn.add_termination_listener(self._on_listener_lost)
                self._listener = conn

    async def wait_for_change(self, timeout: float) -> bool:
        """Wait until another process commits a change (True) or `timeout` passes (False). A hint: re-read.

        LISTEN on a dedicated connection (not a pooled one: a pooled connection would drop the LISTEN
        when returned). The first call starts listening and returns False at once, like SQLite's.
        """
        if self._listener is None:
            try:
                await self._listen()
            except (OSError, asyncpg.PostgresError):
                log.warning('could not LISTEN for job changes; retrying on the next wait', exc_info=True)
                await asyncio.sleep(min(timeout, 1.0))
                return False
            if not self._listened:  # the first call: from now on we hear about commits
                self._listened = True
                self._changed.clear()
                return False
        if not self._changed.is_set():
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except asyncio.TimeoutError:
                return False
        self._changed.clear()
        return True

    # ---- worker side -----------------------------------------------------------------------------

    async def register_worker(self, worker_id: str, info: Mapping[str, Any]) -> None:
        now = self._now()
        async with self._transaction() as conn:
            query = """
                INSERT INTO workers (id, info, started_at, seen_at) VALUES (:worker_id, :info, :now, :now)
                ON CONFLICT (id) DO UPDATE SET info = excluded.info, seen_at = excluded.seen_at
            """
            await self._execute(conn, query, {'worker_id': worker_id, 'info': tx.dumps(dict(info)), 'now': now})

    async def unregister_worker(self, worker_id: str) -> None:
        async with self._transaction() as conn:
            await self._execute(conn, 'DELETE FROM workers WHERE id = :worker_id', {'worker_id': worker_id})

    async def workers_online(self) -> list[dict[str, Any]]:
        now = self._now()
        query = 'SELECT * FROM workers WHERE seen_at >= :since ORDER BY started_at'
        async with self._reading() as conn:
            rows = await self._all(conn, query, {'since': now - WORKER_ONLINE_SECONDS})
        return [{**dict(row), 'info': json.loads(row['info'])} for row in rows]

    async def _expire_leases(self, conn: asyncpg.Connection, now: float) -> SweepReport:
        """Jobs whose worker stopped renewing: back to the queue, or failed once they used every attempt.

        `SKIP LOCKED`: a row another transaction holds is being renewed, completed or expired right now.
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
                finished_at = CASE WHEN cancel_requested OR attempt - handbacks >= max_attempts THEN :now::float8 END,
                available_at = :now,
                worker_id = NULL,
                lease_until = NULL
            WHERE id IN (
                SELECT id FROM jobs WHERE status = 'running' AND lease_until < :now FOR UPDATE SKIP LOCKED
            )
            RETURNING id, status
        """
        rows = await self._all(conn, query, {'now': now})
        report = SweepReport()
        for row in sorted(rows, key=lambda r: r['id']):
            {'queued': report.requeued, 'failed': report.failed, 'cancelled': report.cancelled}[row['status']].append(
                row['id']
            )
        return report

    def _claim_query(self, caps: WorkerCaps) -> tuple[str, dict[str, Any]]:
        """The fair pick (ranking.py's text, shared with SQLite) and the lock-and-lease, as one statement.

        `candidates` is up to CLAIM_WINDOW jobs in fair order with the fair-first job's compat key, read
        from the statement's snapshot. `locked` takes the first `batch` of them that no one else holds,
        and **repeats the eligibility test on `j` at the FOR UPDATE level**: when a row was claimed and
        committed after our snapshot, PostgreSQL locks its newest version and re-checks only this
        level's WHERE against it, so the test here is what drops a job someone else just took.
        """
        where, params = _compat_filter(caps.compat_prefixes)
        query = f"""
            WITH {ACTIVE_RANKED},
            eligible AS (
                SELECT * FROM active WHERE status = 'queued' AND available_at <= :now AND {where}
            ),
            head AS (SELECT compat_key, kind FROM eligible ORDER BY {FAIR_ORDER} LIMIT 1),
            candidates AS (
                SELECT id, ROW_NUMBER() OVER (ORDER BY {FAIR_ORDER}) AS pos
                FROM eligible WHERE compat_key = (SELECT compat_key FROM head)
                ORDER BY {FAIR_ORDER}
                LIMIT :window
            ),
            locked AS (
                SELECT j.id FROM jobs AS j JOIN candidates AS c ON c.id = j.id
                WHERE j.status = 'queued' AND j.available_at <= :now      -- keep it here (module docstring)
                ORDER BY c.pos
                LIMIT CASE WHEN (SELECT kind FROM head) = ANY(:batch_kinds::text[]) THEN :batch ELSE 1 END
                FOR UPDATE OF j SKIP LOCKED
            )
            UPDATE jobs SET
                status = 'running', attempt = attempt + 1, worker_id = :worker_id, lease_until = :lease_until,
                started_at = :now, stage = NULL, step = NULL, total = NULL, preview_path = NULL, progress_at = NULL
            FROM locked
            WHERE jobs.id = locked.id
            RETURNING jobs.*
        """
        return query, params

    async def claim(self, worker_id: str, caps: WorkerCaps, lease_seconds: float) -> list[Job]:
        """Lease the next job in fair order, plus up to `caps.max_batch - 1` more with the same compat key.

        One statement ranks, locks (skipping rows other claimers hold) and leases. When it comes back
        empty although unlocked eligible jobs exist (others held every candidate), try again shortly;
        when nothing is eligible, return []. Expired leases are put back first, so no janitor is needed.
        """
        query, params = self._claim_query(caps)
        check_where, check_params = _compat_filter(caps.compat_prefixes)
        batch = max(1, caps.max_batch)
        for round_ in range(CLAIM_TRIES):
            now = self._now()
            async with self._pool.acquire() as conn:
                await self._maybe_resync(conn)
                expired = await conn.fetchval(
                    "SELECT 1 FROM jobs WHERE status = 'running' AND lease_until < $1 LIMIT 1", now
                )
            if expired:
                async with self._transaction() as conn:
                    await self._expire_leases(conn, now)
                continue
            async with self._transaction(notify=False) as conn:
                params_claim = {
                    **params,
                    'now': now,
                    'window': max(CLAIM_WINDOW, 4 * batch),
                    'batch': batch,
                    'batch_kinds': sorted(tx.batch_kinds(caps)),
                    'worker_id': worker_id,
                    'lease_until': now + lease_seconds,
                }
                rows = await self._all(conn, query, params_claim)
                if rows:
                    await self._seen(conn, worker_id, now)
                    await conn.execute('SELECT pg_notify($1, $2)', CHANNEL, self._token)
            if rows:
                return sorted((Job.from_row(row) for row in rows), key=lambda job: job.id)
            # Nothing taken: is the queue empty for us, or did other claimers hold every candidate?
            query_left = f"""
                SELECT 1 FROM jobs WHERE status = 'queued' AND available_at <= :now AND {check_where}
                LIMIT 1 FOR UPDATE SKIP LOCKED
            """
            async with self._pool.acquire() as conn:
                left = await self._one(conn, query_left, {**check_params, 'now': now})
            if left is None:
                return []
            await asyncio.sleep(random.uniform(0.001, 0.005) * (round_ + 1))
        return []

    async def _seen(self, conn: asyncpg.Connection, worker_id: str, now: float) -> None:
        await self._execute(
            conn, 'UPDATE workers SET seen_at = :now WHERE id = :worker_id', {'worker_id': worker_id, 'now': now}
        )

    _FENCE = "id = :job_id AND attempt = :attempt AND worker_id = :worker_id AND status = 'running'"

    @staticmethod
    def _fence_params(lease: Lease) -> dict[str, Any]:
        return {'job_id': lease.job_id, 'attempt': lease.attempt, 'worker_id': lease.worker_id}

    async def renew(self, leases: Sequence[Lease], lease_seconds: float) -> list[Ack]:
        """Extend each lease; an `Ack` per lease says whether it still holds and whether a cancel was asked.

        No NOTIFY: a renewal changes nothing anyone watches, and NOTIFY serialises commits.
        """
        now = self._now()
        acks = []
        async with self._transaction(notify=False) as conn:
            for lease in leases:
                query = f'UPDATE jobs SET lease_until = :lease_until WHERE {self._FENCE} RETURNING cancel_requested'
                row = await self._one(conn, query, {**self._fence_params(lease), 'lease_until': now + lease_seconds})
                acks.append(Ack(False) if row is None else Ack(True, bool(row['cancel_requested'])))
            if leases:
                await self._seen(conn, leases[0].worker_id, now)
        return acks

    async def progress(self, lease: Lease, progress: Progress, lease_seconds: float) -> Ack:
        """Record the stage, step n/N and preview, and renew the lease. About once a second at most."""
        now = self._now()
        async with self._transaction() as conn:
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
            row = await self._one(conn, query, params)
            await self._seen(conn, lease.worker_id, now)
        return Ack(False) if row is None else Ack(True, bool(row['cancel_requested']))

    async def complete(self, lease: Lease, result: Mapping[str, Any], run_seconds: float) -> JobStatus | None:
        """Store the result summary. Returns the final status (cancelled if a cancel came in meanwhile), or
        None when fenced off: the lease was lost, and the caller must discard its files."""
        now = self._now()
        async with self._transaction() as conn:
            query = f"""
                UPDATE jobs SET
                    status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'succeeded' END,
                    result = CASE WHEN cancel_requested THEN NULL ELSE :result::text END,
                    error = NULL, finished_at = :now, run_seconds = :run_seconds, lease_until = NULL
                WHERE {self._FENCE}
                RETURNING status
            """
            params = {
                **self._fence_params(lease),
                'result': tx.dumps(dict(result)),
                'run_seconds': float(run_seconds),
                'now': now,
            }
            row = await self._one(conn, query, params)
        return None if row is None else JobStatus(row['status'])

    async def fail(self, lease: Lease, error: str, *, retryable: bool, retry_after: float = 0.0) -> JobStatus | None:
        """The run failed. Retryable errors go back to the queue while attempts are left; returns the new
        status, or None when fenced off."""
        now = self._now()
        async with self._transaction() as conn:
            query = f'SELECT attempt, handbacks, max_attempts, cancel_requested FROM jobs WHERE {self._FENCE} FOR UPDATE'
            row = await self._one(conn, query, self._fence_params(lease))
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
                                finished_at = :finished_at::float8, worker_id = NULL, lease_until = NULL
                WHERE {self._FENCE}
            """
            params = {
                **self._fence_params(lease),
                'status': status.value,
                'error': error,
                'available_at': now + retry_after,
                'finished_at': now if status.is_final else None,
            }
            await self._execute(conn, query, params)
        return status

    async def finish_cancelled(self, lease: Lease) -> bool:
        """The worker stopped the job because a cancel was asked."""
        now = self._now()
        async with self._transaction() as conn:
            query = f"UPDATE jobs SET status = 'cancelled', finished_at = :now, lease_until = NULL WHERE {self._FENCE}"
            return await self._execute(conn, query, {**self._fence_params(lease), 'now': now}) > 0

    async def release(self, lease: Lease) -> bool:
        """Hand a job back untouched (worker shutting down): queued again, and the attempt does not count."""
        now = self._now()
        async with self._transaction() as conn:
            query = f"""
                UPDATE jobs SET
                    status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
                    finished_at = CASE WHEN cancel_requested THEN :now::float8 END,
                    handbacks = handbacks + 1, available_at = :now, worker_id = NULL, lease_until = NULL
                WHERE {self._FENCE}
            """
            return await self._execute(conn, query, {**self._fence_params(lease), 'now': now}) > 0

    # ---- delivery --------------------------------------------------------------------------------

    async def undelivered(self, limit: int = 50) -> list[Job]:
        """Finished jobs not yet posted, oldest first."""
        query = """
            SELECT * FROM jobs
            WHERE delivered_at IS NULL AND status IN ('succeeded', 'failed', 'cancelled')
            ORDER BY id LIMIT :limit
        """
        async with self._reading() as conn:
            rows = await self._all(conn, query, {'limit': row_limit(limit)})
        return [Job.from_row(row) for row in rows]

    async def claim_deliveries(self, owner: str, limit: int, lease_seconds: float) -> list[Delivery]:
        """Lease up to `limit` finished, unposted jobs to one poster; the test sits at the FOR UPDATE level
        (as in `claim`), so two bot processes never lease one job at once."""
        now = self._now()
        async with self._transaction(notify=False) as conn:
            query = """
                UPDATE jobs SET delivery_owner = :owner, delivery_attempt = delivery_attempt + 1,
                                delivery_until = :delivery_until
                WHERE id IN (
                    SELECT id FROM jobs
                    WHERE delivered_at IS NULL AND status IN ('succeeded', 'failed', 'cancelled')
                      AND (delivery_until IS NULL OR delivery_until < :now)
                    ORDER BY id LIMIT :limit
                    FOR UPDATE SKIP LOCKED
                )
                RETURNING *
            """
            params = {'owner': owner, 'delivery_until': now + lease_seconds, 'now': now, 'limit': limit}
            rows = await self._all(conn, query, params)
        jobs = sorted((Job.from_row(row) for row in rows), key=lambda job: job.id)
        return [Delivery(job, owner, job.delivery_attempt, now + lease_seconds) for job in jobs]

    async def mark_delivered(self, delivery: Delivery, message_id: int | None) -> bool:
        """Record the post. False: this delivery lease was lost (another poster took the job over)."""
        now = self._now()
        async with self._transaction() as conn:
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
            return await self._execute(conn, query, params) > 0

    # ---- maintenance -----------------------------------------------------------------------------

    async def sweep(self) -> SweepReport:
        """Expire stale leases (claims do this too) and forget workers long gone. Safe to run any time."""
        now = self._now()
        async with self._transaction() as conn:
            report = await self._expire_leases(conn, now)
            query = 'DELETE FROM workers WHERE seen_at < :before'
            forgotten = await self._execute(conn, query, {'before': now - WORKER_FORGET_SECONDS})
        return SweepReport(report.requeued, report.failed, report.cancelled, forgotten)
