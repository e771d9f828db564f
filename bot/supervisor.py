"""Runs the GPU worker as a child process and keeps it running.

The bot and the worker share nothing but the SQLite job store, so the supervisor's whole job is
process hygiene: start `python -m edalle.worker …`, restart it with exponential back-off when it
dies (a crash loop costs a little log noise, not a pegged CPU), reset the back-off once it has run
for a while, and on shutdown send SIGTERM (the worker hands its running jobs back to the queue),
then SIGKILL after a grace period. A job the dead worker held is not lost: its lease expires and the
store gives it to the next worker.

On a small host the worker must not starve the bot: its model code (JAX, torch) uses every core, and the
bot's event loop then waits for the CPU, which members see as slow acknowledgements (bench/RESULTS.md,
bot under load). So the child runs at a lower CPU priority (`nice`, `EDALLE_WORKER_NICE`, default 10),
and with 4 cores or fewer its math libraries get one core fewer than the machine has (`worker_env_with_threads`,
`EDALLE_WORKER_THREADS`). Neither matters on a GPU host, where the worker mostly waits for the GPU.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

FEW_CORES = 4  # at or below this many cores, the worker's CPU threads are capped to leave the bot one
THREAD_VARIABLES = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')  # torch, numpy's BLAS


def worker_threads(requested: int | None, cores: int | None = None) -> int | None:
    """How many CPU threads the worker's math may use: `requested` (`EDALLE_WORKER_THREADS`; 0 means no cap),
    else one fewer than the cores when there are `FEW_CORES` or fewer, else None (no cap)."""
    if requested is not None:
        return requested or None
    cores = cores or os.cpu_count() or 1
    return max(1, cores - 1) if cores <= FEW_CORES else None


def worker_env_with_threads(env: Mapping[str, str], threads: int | None) -> dict[str, str]:
    """The worker's environment with its CPU threads capped at `threads` (None: unchanged).

    OpenMP/BLAS (torch's intra-op threads, numpy) read `*_NUM_THREADS`; XLA's CPU backend (JAX) reads
    `intra_op_parallelism_threads`, and with one thread `--xla_cpu_multi_thread_eigen=false` keeps its
    matrix code on that thread too. Values the operator set already win.
    """
    capped = dict(env)
    if threads is None:
        return capped
    for name in THREAD_VARIABLES:
        capped.setdefault(name, str(threads))
    xla = capped.get('XLA_FLAGS', '')
    flags = [] if 'intra_op_parallelism_threads' in xla else [f'intra_op_parallelism_threads={threads}']
    if threads == 1 and 'xla_cpu_multi_thread_eigen' not in xla:
        flags.insert(0, '--xla_cpu_multi_thread_eigen=false')
    if flags:
        capped['XLA_FLAGS'] = ' '.join([xla, *flags]).strip()
    return capped


@dataclass
class Backoff:
    """1 s, 2 s, 4 s … up to `cap`; back to the start after `healthy_after` seconds of uptime."""

    first: float = 1.0
    cap: float = 60.0
    healthy_after: float = 60.0
    current: float = field(default=0.0, init=False)

    def next_delay(self, uptime: float) -> float:
        if uptime >= self.healthy_after or self.current == 0.0:
            self.current = self.first
        else:
            self.current = min(self.cap, self.current * 2)
        return self.current


class WorkerSupervisor:
    """Start with `await start()`, stop with `await stop()`; `restarts` counts unplanned exits."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        backoff: Backoff | None = None,
        stop_timeout: float = 30.0,
        nice: int = 0,
    ) -> None:
        self.argv = list(argv)
        self.env = env
        self.nice = nice  # added to the child's niceness (lower CPU priority than the bot)
        self.backoff = backoff or Backoff()
        self.stop_timeout = stop_timeout
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.started_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._spawned = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name='edalle-worker-supervisor')
            await self._spawned.wait()

    async def wait_for_restart(self, previous_pid: int | None, timeout: float = 60.0) -> int:
        """Tests: wait until a new worker process (not `previous_pid`) runs; returns its pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid is not None and self.pid != previous_pid:
                return self.pid
            await asyncio.sleep(0.05)
        raise TimeoutError('the worker was not restarted')

    async def _spawn(self) -> None:
        # Own session: Ctrl-C in a terminal reaches only the bot, which then stops the worker in order.
        nice = self.nice

        def in_child() -> None:  # after fork, before exec: only async-signal-safe-ish calls
            _die_with_parent()
            if nice:
                os.nice(nice)

        self.process = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, start_new_session=True, preexec_fn=in_child
        )
        self.started_at = time.monotonic()
        log.info('worker started (pid %s): %s (nice +%d)', self.process.pid, ' '.join(self.argv), nice)
        self._spawned.set()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._spawn()
            except OSError as exc:
                log.error('could not start the worker: %s', exc)
                self._spawned.set()
                return
            assert self.process is not None
            code = await self.process.wait()
            if self._stopping:
                break
            uptime = time.monotonic() - (self.started_at or time.monotonic())
            delay = self.backoff.next_delay(uptime)
            self.restarts += 1
            log.warning(
                'worker (pid %s) exited with %s after %.0f s; restarting in %.0f s', self.process.pid, code, uptime, delay
            )
            await asyncio.sleep(delay)

    async def stop(self) -> int | None:
        """SIGTERM, wait up to `stop_timeout`, then SIGKILL. Returns the worker's exit code."""
        self._stopping = True
        process = self.process
        code = None
        if process is not None and process.returncode is None:
            log.info('stopping the worker (pid %s)', process.pid)
            try:
                process.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(process.wait(), self.stop_timeout)
            except asyncio.TimeoutError:
                log.warning('worker (pid %s) did not stop within %.0f s; killing it', process.pid, self.stop_timeout)
                process.kill()
                code = await process.wait()
            except ProcessLookupError:
                pass
        elif process is not None:
            code = process.returncode
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        return code


def _die_with_parent() -> None:
    """Linux: SIGTERM the worker if the bot dies without stopping it (SIGKILL, OOM), so no orphan keeps the GPU."""
    if not sys.platform.startswith('linux'):
        return
    try:
        import ctypes

        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def worker_argv(
    *, preset: str, data_dir: os.PathLike[str] | str, database: os.PathLike[str] | str, extra: Sequence[str] = ()
) -> list[str]:
    """The worker's command line: the same interpreter (so the same virtualenv) as the bot."""
    return [
        sys.executable,
        '-m',
        'edalle.worker',
        '--preset',
        preset,
        '--data-dir',
        str(data_dir),
        '--db',
        str(database),
        *extra,
    ]
