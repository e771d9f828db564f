"""The SQL stores' shared logic: admission, quota, settings and audit transactions, written once.

SQLite runs each transaction as one plain function on aiosqlite's thread; PostgreSQL awaits asyncpg
on the event loop. What happens between the statements is the same in both: which limit is checked
first, what an audit row holds, how a quota is counted. So that logic lives here once, free of I/O
(the "sans-I/O" style of h11 and friends): a transaction is a generator that yields `Sql`
statements and is sent back each one's result. `run` drives one on a sqlite3 connection;
`PostgresJobStore._run` drives the same generator with awaits. The SQL is written in the `:name`
style both stores bind, and where the dialects differ a `Dialect` says how.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from edalle import errors, operations
from edalle.jobs.limits import (
    BOT_WIDE,
    GuildSettings,
    Limits,
    Quota,
    apply_layers,
    canonical_key,
    day_bounds,
    find_blocked_word,
    settings_from_layers,
)
from edalle.jobs.store import AuditEntry, Ban, FitRequest, Job, JobRequest, JobStatus, WorkerCaps, upload_source
from edalle.operations.base import BUCKET_NOUNS, BUCKETS, Operation, pictures_of

T = TypeVar('T')


@dataclass(frozen=True)
class Sql:
    """One statement of a transaction; `returns` says what the driver sends back."""

    query: str
    params: Mapping[str, Any] = field(default_factory=dict)
    returns: Literal['one', 'all', 'rowcount'] = 'one'  # a row (or None), a list of rows, rows changed


Tx = Generator[Sql, Any, T]


@dataclass(frozen=True)
class Dialect:
    lock_rows: str  # appended to a SELECT whose rows the transaction will change
    active_jobs: str  # the FROM of a count over a user's queued and running jobs


# SQLite has one writer, so its reads need no row locks; its planner is told which index to use.
SQLITE = Dialect(lock_rows='', active_jobs='jobs INDEXED BY jobs_active')
# READ COMMITTED: lock the row, so an audit's old value is the one this change replaced.
POSTGRES = Dialect(lock_rows=' FOR UPDATE', active_jobs='jobs')


def dumps(value: Any) -> str:
    """JSON as both stores keep it in TEXT columns: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(',', ':'))


def batch_kinds(caps: WorkerCaps) -> frozenset[str]:
    """The kinds a worker claims several at once: as its caps say, or by default the batchable operations."""
    if caps.batch_kinds is not None:
        return caps.batch_kinds
    return frozenset(operation.name for operation in operations.OPERATIONS if operation.batchable)


def run(conn: sqlite3.Connection, transaction: Tx[T]) -> T:
    """Drive a transaction on a sqlite3 connection (inside the caller's BEGIN … COMMIT)."""
    result: Any = None
    while True:
        try:
            statement = transaction.send(result)
        except StopIteration as done:
            return done.value
        cursor = conn.execute(statement.query, statement.params)
        if statement.returns == 'one':
            result = cursor.fetchone()
        elif statement.returns == 'all':
            result = cursor.fetchall()
        else:
            result = cursor.rowcount


# ---- settings and limits -------------------------------------------------------------------------


def _layers(query: str, guild_id: int, **params: Any) -> Tx[list[dict[str, Any]]]:
    """Rows (guild_id, key, value) of the bot-wide layer and the guild's, as [bot-wide, guild] dicts."""
    rows = yield Sql(query, {**params, 'bot_wide': BOT_WIDE, 'guild_id': guild_id}, 'all')
    layers: dict[int, dict[str, Any]] = {BOT_WIDE: {}, guild_id: {}}
    for row in rows:
        layers[row['guild_id']][row['key']] = json.loads(row['value'])
    return [layers[BOT_WIDE]] + ([layers[guild_id]] if guild_id != BOT_WIDE else [])


def settings_and_limits(guild_id: int | None, user_id: int | None) -> Tx[tuple[GuildSettings, Limits]]:
    """The guild's settings over the bot-wide ones, and the limits with the user's overrides on top."""
    gid = guild_id or BOT_WIDE
    query = 'SELECT guild_id, key, value FROM guild_settings WHERE guild_id IN (:bot_wide, :guild_id)'
    settings = settings_from_layers(gid, (yield from _layers(query, gid)))
    if user_id is None:
        return settings, settings.limits
    query = """
        SELECT guild_id, key, value FROM user_overrides
        WHERE user_id = :user_id AND guild_id IN (:bot_wide, :guild_id)
    """
    return settings, apply_layers(settings.limits, (yield from _layers(query, gid, user_id=user_id)))


def active_ban(guild_id: int | None, user_id: int, now: float) -> Tx[Ban | None]:
    query = """
        SELECT * FROM user_bans
        WHERE user_id = :user_id AND guild_id IN (:bot_wide, :guild_id) AND (until IS NULL OR until > :now)
        ORDER BY guild_id
        LIMIT 1
    """
    params = {'user_id': user_id, 'bot_wide': BOT_WIDE, 'guild_id': guild_id or BOT_WIDE, 'now': now}
    row = yield Sql(query, params)
    return None if row is None else Ban(**{k: row[k] for k in Ban.__slots__})  # type: ignore[attr-defined]


def audit(
    *,
    guild_id: int,
    actor_id: int | None,
    action: str,
    now: float,
    target_user_id: int | None = None,
    key: str | None = None,
    old_value: Any = None,
    new_value: Any = None,
    reason: str | None = None,
) -> Tx[None]:
    query = """
        INSERT INTO admin_actions
            (guild_id, actor_id, action, target_user_id, key, old_value, new_value, reason, created_at)
        VALUES (:guild_id, :actor_id, :action, :target_user_id, :key, :old_value, :new_value, :reason, :now)
    """
    params = {
        'guild_id': guild_id,
        'actor_id': actor_id,
        'action': action,
        'target_user_id': target_user_id,
        'key': key,
        'old_value': None if old_value is None else dumps(old_value),
        'new_value': None if new_value is None else dumps(new_value),
        'reason': reason,
        'now': now,
    }
    yield Sql(query, params, 'rowcount')


def _replace_value(
    dialect: Dialect, table: str, keys: dict[str, Any], value: Any, *, actor_id: int | None, now: float
) -> Tx[Any]:
    """Upsert `value` (or, for None, delete the row) in a layered settings table; returns the value it replaced.

    `guild_settings` and `user_overrides` have the same shape: key columns, then `value` (JSON), `updated_at`
    and `updated_by`. `table` and the key column names are this module's own, never user input.
    """
    match = ' AND '.join(f'{column} = :{column}' for column in keys)
    row = yield Sql(f'SELECT value FROM {table} WHERE {match}' + dialect.lock_rows, keys)
    if value is None:
        yield Sql(f'DELETE FROM {table} WHERE {match}', keys, 'rowcount')
    else:
        columns, names = ', '.join(keys), ', '.join(f':{column}' for column in keys)
        query = f"""
            INSERT INTO {table} ({columns}, value, updated_at, updated_by)
            VALUES ({names}, :value, :now, :actor_id)
            ON CONFLICT ({columns}) DO UPDATE
            SET value = excluded.value, updated_at = excluded.updated_at, updated_by = excluded.updated_by
        """
        yield Sql(query, {**keys, 'value': dumps(value), 'now': now, 'actor_id': actor_id}, 'rowcount')
    return None if row is None else json.loads(row['value'])


def set_setting(
    dialect: Dialect, guild_id: int, key: str, value: Any, *, actor_id: int | None, reason: str | None, now: float
) -> Tx[None]:
    """Upsert (or, for None, delete) one guild setting, and audit the change. `value` is validated."""
    key = canonical_key(key)
    keys = {'guild_id': guild_id, 'key': key}
    old = yield from _replace_value(dialect, 'guild_settings', keys, value, actor_id=actor_id, now=now)
    yield from audit(
        guild_id=guild_id,
        actor_id=actor_id,
        action='set_setting',
        key=key,
        old_value=old,
        new_value=value,
        reason=reason,
        now=now,
    )


def set_override(
    dialect: Dialect,
    guild_id: int,
    user_id: int,
    key: str,
    value: Any,
    *,
    actor_id: int | None,
    reason: str | None,
    now: float,
) -> Tx[None]:
    """Upsert (or, for None, delete) one user's override of one limit, and audit the change."""
    key = canonical_key(key)
    keys = {'guild_id': guild_id, 'user_id': user_id, 'key': key}
    old = yield from _replace_value(dialect, 'user_overrides', keys, value, actor_id=actor_id, now=now)
    yield from audit(
        guild_id=guild_id,
        actor_id=actor_id,
        action='set_override',
        target_user_id=user_id,
        key=key,
        old_value=old,
        new_value=value,
        reason=reason,
        now=now,
    )


def ban(
    guild_id: int, user_id: int, *, actor_id: int | None, reason: str | None, until: float | None, now: float
) -> Tx[None]:
    query = """
        INSERT INTO user_bans (guild_id, user_id, reason, until, banned_by, banned_at)
        VALUES (:guild_id, :user_id, :reason, :until, :actor_id, :now)
        ON CONFLICT (guild_id, user_id) DO UPDATE
        SET reason = excluded.reason, until = excluded.until, banned_by = excluded.banned_by,
            banned_at = excluded.banned_at
    """
    until = None if until is None else float(until)
    params = {'guild_id': guild_id, 'user_id': user_id, 'reason': reason, 'until': until, 'actor_id': actor_id, 'now': now}
    yield Sql(query, params, 'rowcount')
    yield from audit(
        guild_id=guild_id,
        actor_id=actor_id,
        action='ban',
        target_user_id=user_id,
        new_value={'until': until},
        reason=reason,
        now=now,
    )


def unban(guild_id: int, user_id: int, *, actor_id: int | None, reason: str | None, now: float) -> Tx[bool]:
    query = 'DELETE FROM user_bans WHERE guild_id = :guild_id AND user_id = :user_id'
    removed = (yield Sql(query, {'guild_id': guild_id, 'user_id': user_id}, 'rowcount')) > 0
    if removed:
        yield from audit(
            guild_id=guild_id, actor_id=actor_id, action='unban', target_user_id=user_id, reason=reason, now=now
        )
    return removed


def audit_log(guild_id: int, limit: int) -> Tx[list[AuditEntry]]:
    """The guild's admin changes, newest first."""
    query = 'SELECT * FROM admin_actions WHERE guild_id = :guild_id ORDER BY id DESC LIMIT :limit'
    rows = yield Sql(query, {'guild_id': guild_id, 'limit': limit}, 'all')
    return [AuditEntry.from_row(row) for row in rows]


def member_settings(user_id: int) -> Tx[dict[str, Any]]:
    """A member's own defaults (`/settings`), key → value."""
    rows = yield Sql('SELECT key, value FROM member_settings WHERE user_id = :user_id', {'user_id': user_id}, 'all')
    return {row['key']: json.loads(row['value']) for row in rows}


def set_member_setting(user_id: int, key: str, value: Any, *, now: float) -> Tx[dict[str, Any]]:
    """Set (or, for None, forget) one of a member's defaults; returns all of them after the change."""
    params = {'user_id': user_id, 'key': key}
    if value is None:
        yield Sql('DELETE FROM member_settings WHERE user_id = :user_id AND key = :key', params, 'rowcount')
    else:
        query = """
            INSERT INTO member_settings (user_id, key, value, updated_at) VALUES (:user_id, :key, :value, :now)
            ON CONFLICT (user_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
        """
        yield Sql(query, {**params, 'value': dumps(value), 'now': now}, 'rowcount')
    return (yield from member_settings(user_id))


# ---- quota and admission -------------------------------------------------------------------------


def quota(user_id: int, limits: Limits, now: float) -> Tx[Quota]:
    """Counted from the job rows: today's queued, running and succeeded jobs per operation's bucket, so failures
    give back. Kinds no operation declares (a test's probe jobs) count against nothing."""
    day_start, day_end = day_bounds(now)
    query = """
        SELECT kind, count(*) AS used FROM jobs
        WHERE user_id = :user_id AND created_at >= :day_start AND created_at < :day_end
          AND status IN ('queued', 'running', 'succeeded')
        GROUP BY kind
    """
    rows = yield Sql(query, {'user_id': user_id, 'day_start': day_start, 'day_end': day_end}, 'all')
    used = dict.fromkeys(BUCKETS, 0)
    for row in rows:
        operation = operations.get(row['kind'])
        if operation is not None:
            used[operation.bucket] += row['used']
    return Quota(used=used, limits={bucket: getattr(limits, bucket) for bucket in BUCKETS}, resets_at=day_end)


def user_quota(guild_id: int | None, user_id: int, now: float) -> Tx[Quota]:
    _, limits = yield from settings_and_limits(guild_id, user_id)
    return (yield from quota(user_id, limits, now))


def check_source(operation: Operation, request: JobRequest) -> Tx[None]:
    """A picture-taking job starts from one picture of a succeeded job (or the member's own upload), which must be
    the requester's own where the operation says so (admins excepted). Jobs that take no picture name none."""
    upload = upload_source(request)
    if not operation.takes_picture:
        if upload is not None or request.parent_job_id is not None:
            raise errors.InvalidParent(f'{operation.title.capitalize()} does not start from a picture.')
        return
    if upload is not None:
        return  # a member's own picture: the bot checked and stored it before enqueueing
    if request.parent_job_id is None and request.parent_index is None and operation.picture_optional:
        return
    if request.parent_job_id is None or request.parent_index is None:
        raise errors.InvalidParent()
    query = 'SELECT kind, status, result, user_id FROM jobs WHERE id = :job_id'
    row = yield Sql(query, {'job_id': request.parent_job_id})
    if row is None:
        raise errors.InvalidParent(f"I can't find job #{request.parent_job_id}.")
    if row['status'] != JobStatus.SUCCEEDED.value:
        raise errors.InvalidParent(f'Job #{request.parent_job_id} has no finished pictures to start from.')
    if operation.owner_only and row['user_id'] != request.user_id and not request.admin:
        raise errors.InvalidParent(f'Job #{request.parent_job_id} belongs to someone else: start from a picture of yours.')
    pictures = pictures_of(json.loads(row['result']) if row['result'] else None)
    if not any(picture.index == request.parent_index for picture in pictures):
        raise errors.InvalidParent(f'Job #{request.parent_job_id} has no candidate {request.parent_index + 1}.')


def check_admission(dialect: Dialect, request: JobRequest, settings: GuildSettings, limits: Limits, now: float) -> Tx[Quota]:
    """Raise the first limit the request breaks; order: who, where, what, then how much."""
    banned = yield from active_ban(request.guild_id, request.user_id, now)
    if banned is not None:
        raise errors.Banned(banned.reason, banned.until)
    if not settings.channel_allowed(request.channel_id):
        raise errors.ChannelNotAllowed()
    operation = operations.get(request.kind)
    if operation is not None and operation.name in settings.disabled_operations:
        raise errors.OperationDisabled(operation.title)
    texts = operation.texts(request.payload) if operation is not None else [str(request.payload.get('prompt') or '')]
    if any(text and find_blocked_word(text, settings.blocked_words) for text in texts):
        raise errors.PromptRejected()
    if operation is not None:
        operation.check(request.payload, limits)
        yield from check_source(operation, request)

    counted = yield from quota(request.user_id, limits, now)
    if operation is not None and counted.used[operation.bucket] >= counted.limits[operation.bucket]:
        limit = counted.limits[operation.bucket]
        raise errors.QuotaExceeded(request.kind, limit, counted.resets_at, now, noun=BUCKET_NOUNS[operation.bucket])

    # Two index lookups (the active rows; the newest row), never a scan of the user's history.
    query = f"SELECT count(*) AS n FROM {dialect.active_jobs} WHERE user_id = :user_id AND status IN ('queued', 'running')"
    pending = (yield Sql(query, {'user_id': request.user_id}))['n']
    if pending >= limits.pending_per_user:
        raise errors.TooManyPending(limits.pending_per_user)
    query = 'SELECT max(created_at) AS last_at FROM jobs WHERE user_id = :user_id'
    last_at = (yield Sql(query, {'user_id': request.user_id}))['last_at']
    if last_at is not None and now - last_at < limits.cooldown_seconds:
        raise errors.CooldownActive(limits.cooldown_seconds - (now - last_at))

    queued = (yield Sql("SELECT count(*) AS n FROM jobs WHERE status IN ('queued', 'running')"))['n']
    if queued >= limits.queue_cap:
        raise errors.QueueFull(limits.queue_cap)
    return counted


def admit(
    dialect: Dialect, request: JobRequest, fit: FitRequest | None, *, max_attempts: int, now: float
) -> Tx[tuple[Job, bool, Quota]]:
    """The write half of `enqueue`: (job, created, quota). A known `request_key` returns the earlier job.

    `fit(request, settings, limits)` reshapes a new request with the settings read here (the bot's
    blocked-word check and candidate cap) before the limits are checked.
    """
    settings, limits = yield from settings_and_limits(request.guild_id, request.user_id)
    row = None
    if request.request_key is not None:
        row = yield Sql('SELECT * FROM jobs WHERE request_key = :request_key', {'request_key': request.request_key})
    created = row is None
    if created:
        if fit is not None:
            request = fit(request, settings, limits)
        yield from check_admission(dialect, request, settings, limits, now)
        query = """
            INSERT INTO jobs (kind, user_id, guild_id, channel_id, request_key, parent_job_id, parent_index,
                              compat_key, payload, priority, available_at, max_attempts, created_at)
            VALUES (:kind, :user_id, :guild_id, :channel_id, :request_key, :parent_job_id, :parent_index,
                    :compat_key, :payload, :priority, :now, :max_attempts, :now)
            RETURNING *
        """
        params = {
            'kind': request.kind,
            'user_id': request.user_id,
            'guild_id': request.guild_id,
            'channel_id': request.channel_id,
            'request_key': request.request_key,
            'parent_job_id': request.parent_job_id,
            'parent_index': request.parent_index,
            'compat_key': request.compat_key,
            'payload': dumps(dict(request.payload)),
            'priority': request.priority,
            'max_attempts': request.max_attempts or max_attempts,
            'now': now,
        }
        row = yield Sql(query, params)
    counted = yield from quota(request.user_id, limits, now)
    return Job.from_row(row), created, counted


def lineage(job_id: int, limit: int) -> Tx[list[Job]]:
    """The job and its ancestors through `parent_job_id`, oldest first (at most `limit` of them)."""
    query = """
        WITH RECURSIVE chain(id, depth) AS (
            SELECT id, 0 FROM jobs WHERE id = :job_id
            UNION ALL
            SELECT jobs.parent_job_id, chain.depth + 1 FROM jobs JOIN chain ON jobs.id = chain.id
            WHERE jobs.parent_job_id IS NOT NULL AND chain.depth + 1 < :limit
        )
        SELECT jobs.* FROM chain JOIN jobs ON jobs.id = chain.id ORDER BY chain.depth DESC
    """
    rows = yield Sql(query, {'job_id': job_id, 'limit': limit}, 'all')
    if not rows:
        raise errors.JobNotFound(job_id)
    return [Job.from_row(row) for row in rows]
