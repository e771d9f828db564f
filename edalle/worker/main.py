"""The worker process: load the models once, then claim, run, report and settle jobs until told to stop.

    python -m edalle.worker --db data/edalle.db --preset mini --batch 4     (or `edalle worker …`)

One asyncio loop owns the database connection; the engine runs on a separate job thread because it
blocks for seconds. While it runs, a heartbeat task renews the lease (every lease/4), writes progress at
most once a second, and learns about cancels from the store's answers; the job thread sees them through
`RunContext.should_cancel()` between steps. Results are written to a folder per attempt and only then
recorded with a fenced `complete`, so a worker that lost its lease changes nothing.

Stopping: the first SIGTERM (or Ctrl-C) stops claiming and gives the running job `--grace` seconds to
finish; after that (or at a second signal) the job is asked to stop and is handed back to the queue
without using up an attempt. A worker killed outright (`kill -9`, a crash) simply stops renewing: its
lease expires and the next claim puts the job back in the queue, or fails it once it has killed
`max_attempts` workers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edalle import operations
from edalle.errors import JobNotFound, RunFailed
from edalle.jobs import Job, JobStatus, JobStore, Lease, Progress, WorkerCaps
from edalle.jobs import result_store as result_files
from edalle.jobs.backends import describe, open_store
from edalle.jobs.store import UPLOADS_JOB_ID
from edalle.operations.base import Cancelled, WorkItem
from edalle.outputs import RunFolder, write_preview
from edalle.presets import PRESETS, UnknownPreset
from edalle.startup import log_banner, log_devices, result_store_warning
from edalle.weights import MissingWeights, fetch_missing
from edalle.worker.runners import Runner, RunnerConfig, build_runners

log = logging.getLogger(__name__)

T = TypeVar('T')

INTERNAL_ERROR = 'The worker hit an unexpected error while running this job.'
RESULT_STORE_ERROR = 'The pictures were made but could not be stored. Please try again later.'
HANDBACK_WAIT_SECONDS = 5.0  # after asking a runner to stop, how long to wait before leaving it behind
REGISTER_EVERY_SECONDS = 30.0  # idle workers say they are alive this often (busy ones through renewals)
FALSE = ('0', 'false', 'no', 'off')


@dataclass(frozen=True)
class WorkerOptions:
    database: Path
    data_dir: Path
    database_url: str | None = None  # postgresql://…: the shared job store on another host (else SQLite `database`)
    result_store: str | None = None  # local (default), database or s3: where result files go for the bot
    preset: str = 'mini'
    batch: int = 1  # imagine jobs with one compat key run together, up to this many
    kinds: tuple[str, ...] = operations.names()
    runner_modules: tuple[str, ...] = ()
    lease_seconds: float = 60.0
    poll_seconds: float = 1.0  # idle: look at the queue at least this often (wake-ups come sooner)
    grace_seconds: float = 30.0  # after SIGTERM, time the running job gets to finish
    progress_seconds: float = 1.0  # at most one progress write per job this often
    preview_seconds: float = 5.0  # at most one preview image this often
    retry_backoff_seconds: float = 5.0  # an unexpected error retries after attempt × this (≤ 60 s)
    max_jobs: int | None = None  # exit after this many jobs (recycling, tests)
    exit_when_idle: bool = False  # exit when no job is claimable (batch runs, tests)
    worker_id: str | None = None
    device: str | None = None
    dtype: str | None = None
    download: bool = True  # fetch the preset's missing model files before starting (--no-download, EDALLE_DOWNLOAD=0)

    @property
    def heartbeat_seconds(self) -> float:
        return self.lease_seconds / 4


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The `edalle worker` options (the CLI mounts them; `python -m edalle.worker` uses them alone)."""
    parser.add_argument(
        '--db',
        dest='database',
        type=Path,
        default=None,
        help='the job database (default $EDALLE_DB or <data dir>/edalle.db)',
    )
    parser.add_argument(
        '--database-url',
        default=None,
        help='postgresql://user:password@host/db: a job store shared by workers on many hosts (default $EDALLE_DATABASE_URL;'
        ' unset: the SQLite file of --db)',
    )
    parser.add_argument(
        '--result-store',
        default=None,
        choices=result_files.RESULT_STORES,
        help='where result files go so the bot can read them from another host (default $EDALLE_RESULT_STORE or local)',
    )
    # SUPPRESS: when mounted under `edalle`, its global --data-dir must not be overwritten by our default
    parser.add_argument(
        '--data-dir', type=Path, default=argparse.SUPPRESS, help='models and images (default $EDALLE_DATA_DIR or ./data)'
    )
    parser.add_argument(
        '--preset', choices=list(PRESETS), default=None, help='models to load (default $EDALLE_PRESET or mini)'
    )
    parser.add_argument(
        '--no-download',
        action='store_true',
        help='refuse to start when model files are missing instead of fetching them (also EDALLE_DOWNLOAD=0)',
    )
    parser.add_argument('--batch', type=int, default=1, help='run up to B compatible imagine jobs as one batch (default 1)')
    every = ','.join(operations.names())
    parser.add_argument('--kinds', default=every, help=f'job kinds to serve, comma-separated (default {every})')
    parser.add_argument(
        '--runner-module', action='append', default=[], help='import RUNNERS for more job kinds from this module'
    )
    parser.add_argument(
        '--lease', type=float, default=60.0, help='lease length in seconds; renewed every lease/4 (default 60)'
    )
    parser.add_argument(
        '--grace', type=float, default=30.0, help='after SIGTERM, seconds the running job gets to finish (default 30)'
    )
    parser.add_argument(
        '--retry-backoff', type=float, default=5.0, help='after an unexpected error, retry in attempt × this many seconds'
    )
    parser.add_argument('--poll', type=float, default=1.0, help='idle polling interval in seconds (default 1)')
    parser.add_argument('--max-jobs', type=int, default=None, help='exit after this many jobs')
    parser.add_argument('--exit-when-idle', action='store_true', help='exit when the queue has nothing for this worker')
    parser.add_argument('--worker-id', default=None, help='name in the queue (default host:pid:random)')
    parser.add_argument('--device', default=None, help='torch device (default cuda when available)')
    parser.add_argument('--dtype', default=None, choices=('float32', 'bfloat16', 'float16'), help='DalleBart compute type')


def options_from_args(args: argparse.Namespace) -> WorkerOptions:
    env = os.environ
    data_dir = Path(getattr(args, 'data_dir', None) or env.get('EDALLE_DATA_DIR') or 'data')
    database = Path(args.database or env.get('EDALLE_DB') or data_dir / 'edalle.db')
    if args.batch < 1 or args.lease <= 0 or args.grace < 0:
        raise ValueError('--batch must be at least 1, --lease positive and --grace not negative')
    return WorkerOptions(
        database=database,
        data_dir=data_dir,
        database_url=getattr(args, 'database_url', None) or env.get('EDALLE_DATABASE_URL') or None,
        result_store=getattr(args, 'result_store', None) or env.get('EDALLE_RESULT_STORE') or None,
        preset=args.preset or env.get('EDALLE_PRESET') or 'mini',
        batch=args.batch,
        kinds=tuple(kind.strip() for kind in args.kinds.split(',') if kind.strip()),
        runner_modules=tuple(args.runner_module),
        lease_seconds=args.lease,
        grace_seconds=args.grace,
        poll_seconds=args.poll,
        retry_backoff_seconds=args.retry_backoff,
        max_jobs=args.max_jobs,
        exit_when_idle=args.exit_when_idle,
        worker_id=args.worker_id,
        device=args.device,
        dtype=args.dtype,
        download=not getattr(args, 'no_download', False) and env.get('EDALLE_DOWNLOAD', '1').strip().lower() not in FALSE,
    )


def run_worker(argv_or_options: Sequence[str] | argparse.Namespace | WorkerOptions | None = None) -> int:
    """Run a worker until it is stopped; returns the process exit code."""
    if isinstance(argv_or_options, WorkerOptions):
        options = argv_or_options
    else:
        args = argv_or_options
        if not isinstance(args, argparse.Namespace):
            parser = argparse.ArgumentParser(prog='edalle worker', description='Claim jobs from the queue and run them.')
            add_worker_arguments(parser)
            args = parser.parse_args(args)
        try:
            options = options_from_args(args)
        except ValueError as exc:
            print(f'edalle worker: {exc}', file=sys.stderr)
            return 2
    log_banner(
        'worker',
        {
            'data dir': str(options.data_dir.resolve()),
            'database': describe(options.database_url, options.database),
            'preset': options.preset,
            'result store': options.result_store or 'local',
            'kinds': ', '.join(options.kinds),
        },
    )
    if warning := result_store_warning(options.database_url, options.result_store):
        log.warning('%s', warning)
    if set(options.kinds) & set(operations.names()):  # the operations run on the preset's models
        try:
            fetch_missing(options.preset, options.data_dir, allowed=options.download, log=log.info)
        except (MissingWeights, UnknownPreset) as exc:
            print(f'edalle worker: {exc}', file=sys.stderr)
            return 2
    try:
        return asyncio.run(Worker(options).run())
    except ValueError as exc:  # unknown kinds, bad runner modules: say so, no traceback
        print(f'edalle worker: {exc}', file=sys.stderr)
        return 2


def run_in_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Run `fn` on a daemon thread and return a future for it.

    Not `asyncio.to_thread`: its executor threads are joined at exit, so a runner stuck in the engine
    would keep a worker that has already handed its job back from exiting.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            setter(value)

    def target() -> None:
        try:
            result = fn(*args)
        except Exception as exc:
            outcome: tuple[Callable[[Any], None], Any] = (future.set_exception, exc)
        else:
            outcome = (future.set_result, result)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is gone: the worker already left
            pass

    threading.Thread(target=target, name='edalle-job', daemon=True).start()
    return future


class Batch:
    """The jobs running now, shared by the loop (heartbeat, acks) and the job thread (progress, cancel checks).

    It is the runners' `RunContext`.
    """

    def __init__(self, items: list[WorkItem], preview_seconds: float) -> None:
        self.items = items
        self.leases: dict[int, Lease] = {item.job.id: item.job.lease for item in items}  # type: ignore[misc]
        self.lost: set[int] = set()  # fenced off: another worker owns the job now
        self.cancel_requested: set[int] = set()
        self.handing_back = False
        self.preview_seconds = preview_seconds
        self._lock = threading.Lock()
        self._stage: tuple[str, int, int] | None = None
        self._previews: dict[int, str] = {}
        self._dirty = False
        self._last_preview = float('-inf')

    # ---- RunContext, called on the job thread ----

    def progress(self, stage: str, done: int, total: int, preview: Any = None) -> None:
        """`preview`: one picture for every job of the batch, or `{job id: picture}` where each job has its own."""
        paths: dict[int, str] = {}
        if preview is not None and time.monotonic() - self._last_preview >= self.preview_seconds:
            self._last_preview = time.monotonic()
            live = [item for item in self.items if item.job.id not in self.lost]
            if isinstance(preview, dict):
                for item in live:
                    if item.job.id in preview:
                        paths[item.job.id] = write_preview([item.folder], preview[item.job.id])[0]
            else:
                paths = dict(zip((i.job.id for i in live), write_preview([i.folder for i in live], preview), strict=True))
        with self._lock:
            self._stage = (stage, int(done), int(total))
            self._previews.update(paths)
            self._dirty = True

    def should_cancel(self) -> bool:
        return self.handing_back or all(i in self.cancel_requested or i in self.lost for i in self.leases)

    def check_cancel(self) -> None:
        if self.should_cancel():
            raise Cancelled()

    # ---- the loop side ----

    def live_leases(self) -> list[Lease]:
        return [lease for job_id, lease in self.leases.items() if job_id not in self.lost]

    def take_progress(self) -> dict[int, Progress] | None:
        with self._lock:
            if not self._dirty or self._stage is None:
                return None
            self._dirty = False
            stage, done, total = self._stage
            return {job_id: Progress(stage, done, total, self._previews.get(job_id)) for job_id in self.leases}


class Worker:
    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.worker_id = options.worker_id or f'{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}'
        self.jobs_done = 0
        self._stop = asyncio.Event()
        self._handback = asyncio.Event()
        self.results: result_files.ResultStore = result_files.LocalResultStore(options.data_dir)

    def _on_signal(self, signum: int) -> None:
        loop = asyncio.get_running_loop()
        if not self._stop.is_set():
            log.info(
                'worker %s: %s, finishing the running job (up to %g s)',
                self.worker_id,
                signal.Signals(signum).name,
                self.options.grace_seconds,
            )
            self._stop.set()
            loop.call_later(self.options.grace_seconds, self._handback.set)
        else:
            log.info('worker %s: second signal, handing the running job back now', self.worker_id)
            self._handback.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        options = self.options
        store = await open_store(options.database_url, options.database)
        log.info('worker %s: job store %s', self.worker_id, describe(options.database_url, options.database))
        try:
            self.results = await result_files.open_result_store(
                options.result_store, data_dir=options.data_dir, database_url=options.database_url
            )
            config = RunnerConfig(options.preset, options.data_dir, options.device, options.dtype)
            log.info(
                'worker %s: loading runners for %s (preset %s)', self.worker_id, ', '.join(options.kinds), options.preset
            )
            runners = await run_in_thread(build_runners, options.kinds, config, options.runner_modules)
            log_devices(options.device)  # what JAX and torch really use, and a warning if JAX missed the GPU
            caps = WorkerCaps(
                compat_prefixes=tuple(runner.compat_prefix for runner in runners.values()),
                max_batch=options.batch,
                batch_kinds=frozenset(kind for kind, runner in runners.items() if runner.batchable),
            )
            info = {
                'host': socket.gethostname(),
                'pid': os.getpid(),
                'preset': options.preset,
                'kinds': list(runners),
                'batch': options.batch,
            }
            await store.register_worker(self.worker_id, info)
            registered_at = time.monotonic()
            await store.wait_for_change(0)  # note where the database stands, for wake-ups
            log.info('worker %s: ready', self.worker_id)
            while not self._stop.is_set():
                jobs = await store.claim(self.worker_id, caps, options.lease_seconds)
                if jobs:
                    await self._run_batch(store, runners[jobs[0].kind], jobs)
                    if options.max_jobs is not None and self.jobs_done >= options.max_jobs:
                        break
                    continue
                if options.exit_when_idle:
                    break
                if time.monotonic() - registered_at >= REGISTER_EVERY_SECONDS:
                    await store.register_worker(self.worker_id, info)
                    registered_at = time.monotonic()
                await self._idle(store)
        finally:
            try:
                await store.unregister_worker(self.worker_id)
            finally:
                await store.close()
                await self.results.close()
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
        log.info('worker %s: stopped after %d job(s)', self.worker_id, self.jobs_done)
        return 0

    async def _idle(self, store: JobStore) -> None:
        """Sleep until another process commits (a new job, maybe), a stop, or the poll interval."""
        waiter = asyncio.ensure_future(store.wait_for_change(self.options.poll_seconds))
        stopper = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (waiter, stopper):
            task.cancel()
        await asyncio.gather(waiter, stopper, return_exceptions=True)

    async def _run_batch(self, store: JobStore, runner: Runner, jobs: list[Job]) -> None:
        folders = [RunFolder(self.options.data_dir, job.id, job.attempt) for job in jobs]
        items = [WorkItem(job, folder, await self._parent(store, job)) for job, folder in zip(jobs, folders, strict=True)]
        batch = Batch(items, self.options.preview_seconds)
        log.info('worker %s: running %s job(s) %s', self.worker_id, jobs[0].kind, ', '.join(f'#{j.id}' for j in jobs))
        started = time.monotonic()
        heartbeat = asyncio.ensure_future(self._heartbeat(store, batch))
        handback = asyncio.ensure_future(self._handback.wait())
        future = run_in_thread(runner.run, items, batch)
        try:
            await asyncio.wait({future, handback}, return_when=asyncio.FIRST_COMPLETED)
            if not future.done():  # grace is over: ask the runner to stop, then leave it behind
                batch.handing_back = True
                await asyncio.wait({future}, timeout=HANDBACK_WAIT_SECONDS)
        finally:
            for task in (heartbeat, handback):
                task.cancel()
            await asyncio.gather(heartbeat, handback, return_exceptions=True)
        await self._settle(store, batch, future, time.monotonic() - started)
        self.jobs_done += len(items)

    async def _parent(self, store: JobStore, job: Job) -> Job | None:
        if job.parent_job_id is None:
            await self._fetch_upload(job)
            return None
        try:
            parent = await store.get(job.parent_job_id)
        except JobNotFound:
            return None
        # The parent's pictures may have been made on another host: fetch them through the result store.
        try:
            await result_files.materialize(self.results, self.options.data_dir, parent.id)
        except Exception:  # the runner then says the picture is missing, in words for the user
            log.warning('worker %s: fetching the files of job #%d failed', self.worker_id, parent.id, exc_info=True)
        return parent

    async def _fetch_upload(self, job: Job) -> None:
        """A job on a member's picture: the bot stored it (under `UPLOADS_JOB_ID`) on its host; fetch it here."""
        source = (job.payload or {}).get('source_path')
        if not source:
            return
        try:
            await result_files.materialize(self.results, self.options.data_dir, UPLOADS_JOB_ID, source)
        except Exception:  # the runner then says the picture is missing, in words for the user
            log.warning('worker %s: fetching %s for job #%d failed', self.worker_id, source, job.id, exc_info=True)

    async def _heartbeat(self, store: JobStore, batch: Batch) -> None:
        """Renew the leases, write progress (≤ 1 per `progress_seconds`), and pass cancels to the runner."""
        options = self.options
        tick = min(0.2, options.heartbeat_seconds / 2)
        last_renew = last_progress = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            leases = batch.live_leases()
            progress = batch.take_progress() if now - last_progress >= options.progress_seconds else None
            if not leases or (progress is None and now - last_renew < options.heartbeat_seconds):
                continue
            if progress is not None and not self.results.is_local:
                await self._publish_previews(progress)
            try:
                if progress is not None:
                    acks = [await store.progress(lease, progress[lease.job_id], options.lease_seconds) for lease in leases]
                    last_progress = now
                else:
                    acks = await store.renew(leases, options.lease_seconds)
            except Exception:  # a busy or broken database: keep running; the lease says how long we may
                log.warning('worker %s: renewing the lease failed', self.worker_id, exc_info=True)
                continue
            last_renew = now
            for lease, ack in zip(leases, acks, strict=True):
                if not ack.ok:
                    log.warning(
                        'worker %s: lost the lease of job #%d; its output will be discarded', self.worker_id, lease.job_id
                    )
                    batch.lost.add(lease.job_id)
                elif ack.cancel_requested and lease.job_id not in batch.cancel_requested:
                    log.info('worker %s: job #%d was cancelled', self.worker_id, lease.job_id)
                    batch.cancel_requested.add(lease.job_id)

    async def _publish_previews(self, progress: dict[int, Progress]) -> None:
        """Previews to the result store before the progress row names them (the bot may be on another host)."""
        for job_id, item in progress.items():
            if item.preview_path:
                try:
                    await result_files.publish(self.results, self.options.data_dir, job_id, [item.preview_path])
                except Exception:  # a preview is a courtesy: the job goes on without it
                    log.warning('worker %s: publishing the preview of job #%d failed', self.worker_id, job_id, exc_info=True)

    async def _settle(self, store: JobStore, batch: Batch, future: asyncio.Future[Any], seconds: float) -> None:
        """Record how each job ended. Files of jobs that did not succeed here are removed."""
        live = [item for item in batch.items if item.job.id not in batch.lost]
        for item in batch.items:
            if item.job.id in batch.lost:
                item.folder.discard()
        if not future.done():  # the runner did not stop in time: hand back and let it run out alone
            for item in live:
                await store.release(batch.leases[item.job.id])
                item.folder.discard()
            return
        error = future.exception()
        if error is not None:
            if not isinstance(error, (Cancelled, RunFailed)):
                log.error('worker %s: %s job(s) failed', self.worker_id, batch.items[0].job.kind, exc_info=error)
            for item in live:
                lease = batch.leases[item.job.id]
                if isinstance(error, Cancelled) and batch.handing_back:
                    await store.release(lease)
                elif isinstance(error, Cancelled):
                    await store.finish_cancelled(lease)
                elif isinstance(error, RunFailed):
                    await store.fail(lease, str(error), retryable=False)
                else:
                    backoff = min(60.0, self.options.retry_backoff_seconds * item.job.attempt)
                    await store.fail(lease, INTERNAL_ERROR, retryable=True, retry_after=backoff)
                item.folder.discard()
            return
        outcomes = dict(zip((item.job.id for item in batch.items), future.result(), strict=True))
        per_job = seconds / len(batch.items)  # each job's share of the batch: what ETAs are made of
        for item in live:
            lease, outcome = batch.leases[item.job.id], outcomes[item.job.id]
            if isinstance(outcome, RunFailed):
                await store.fail(lease, str(outcome), retryable=False)
                item.folder.discard()
                continue
            # Files first, then the row that names them: the bot never reads a result it cannot fetch.
            try:
                await result_files.publish_folder(self.results, self.options.data_dir, item.job.id, item.folder.path)
            except Exception:
                log.error('worker %s: storing the files of job #%d failed', self.worker_id, item.job.id, exc_info=True)
                backoff = min(60.0, self.options.retry_backoff_seconds * item.job.attempt)
                await store.fail(lease, RESULT_STORE_ERROR, retryable=True, retry_after=backoff)
                item.folder.discard()
                continue
            status = await store.complete(lease, outcome, per_job)
            if status is JobStatus.SUCCEEDED:
                item.folder.discard_other_attempts()  # left by workers that died on this job
            else:  # fenced off, or cancelled meanwhile
                item.folder.discard()
                if not self.results.is_local:
                    await self.results.delete_job(item.job.id, prefix=item.folder.relative.as_posix() + '/')
