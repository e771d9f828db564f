"""`edalle status`: is this installation working? The database, the queue and the workers, in a few lines.

For people (`edalle status` on a host, `docker compose exec bot edalle status`) and for Docker's
HEALTHCHECK, which reads the exit status: 0 when the job database answers (and, with `--require-worker`,
when a worker has said it is alive within the store's online window), 1 otherwise.

It reads and never writes: the store is opened without migrating, and a SQLite file that does not exist
yet is reported as such rather than created.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edalle import __version__
from edalle.jobs.backends import describe, open_store

OPEN_TIMEOUT_SECONDS = 10.0  # an unreachable PostgreSQL host must not hang a health check
QUEUE_SCAN_LIMIT = 1000  # active jobs counted; past this the count reads "1000+"


@dataclass(frozen=True)
class WorkerSeen:
    worker_id: str
    host: str
    preset: str
    kinds: tuple[str, ...]
    seen_seconds_ago: float


@dataclass(frozen=True)
class Health:
    database: str  # where the store is, without a password
    problem: str | None = None  # why it could not be read; None: it answered
    running: int = 0
    queued: int = 0
    workers: tuple[WorkerSeen, ...] = field(default_factory=tuple)

    @property
    def reachable(self) -> bool:
        return self.problem is None


async def check(database_url: str | None, sqlite_path: Path) -> Health:
    """Open the store read-only (no migrations), count the active jobs and list the workers online."""
    where = describe(database_url, sqlite_path)
    if not (database_url or '').strip() and not sqlite_path.is_file():
        return Health(where, f'no database file yet at {sqlite_path} (the bot or a worker creates it when it starts)')
    try:
        store = await asyncio.wait_for(open_store(database_url, sqlite_path, migrate=False), OPEN_TIMEOUT_SECONDS)
    except Exception as exc:  # every way a database can be unreachable: say which, in one line
        return Health(where, _one_line(exc))
    try:
        active = await store.queue_snapshot(limit=QUEUE_SCAN_LIMIT)
        online = await store.workers_online()
    except Exception as exc:
        return Health(where, _one_line(exc))
    finally:
        await store.close()
    now = time.time()
    return Health(
        where,
        running=sum(job.status.value == 'running' for job in active),
        queued=sum(job.status.value == 'queued' for job in active),
        workers=tuple(_worker(row, now) for row in online),
    )


def _worker(row: Mapping[str, Any], now: float) -> WorkerSeen:
    info = row.get('info') or {}
    return WorkerSeen(
        worker_id=str(row.get('id', '?')),
        host=str(info.get('host', '?')),
        preset=str(info.get('preset', '?')),
        kinds=tuple(info.get('kinds') or ()),
        seen_seconds_ago=max(0.0, now - float(row.get('seen_at') or now)),
    )


def _one_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), '')
    return f'{type(exc).__name__}: {text}' if text else type(exc).__name__


def verdict(health: Health, require_worker: str | None, host: str | None = None) -> tuple[int, list[str]]:
    """The exit status and the lines to print. `require_worker`: None, 'any' (a worker anywhere) or
    'this-host' (a worker whose host name is this machine's, as in the worker's own container)."""
    host = host or socket.gethostname()
    lines = [f'edalle {__version__}']
    if not health.reachable:
        lines.append(f'database  {health.database}: NOT reachable: {health.problem}')
        return 1, lines
    lines.append(f'database  {health.database}: reachable')
    more = '+' if health.running + health.queued >= QUEUE_SCAN_LIMIT else ''
    lines.append(f'queue     {health.running} running, {health.queued}{more} queued')
    lines.append(f'workers   {len(health.workers)} online' + ('' if health.workers else ' (jobs wait until one starts)'))
    for worker in health.workers:
        kinds = ', '.join(worker.kinds) or '?'
        lines.append(f'  {worker.worker_id}: preset {worker.preset}, {kinds}; seen {worker.seen_seconds_ago:.0f} s ago')
    if require_worker == 'any' and not health.workers:
        lines.append('unhealthy: no worker is online')
        return 1, lines
    if require_worker == 'this-host' and not any(worker.host == host for worker in health.workers):
        lines.append(f'unhealthy: no worker on this host ({host}) is online')
        return 1, lines
    return 0, lines
