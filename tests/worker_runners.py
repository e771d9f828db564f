"""A job kind for the worker tests, and helpers to drive worker processes.

`probe` jobs do real, small, controllable work with no model: log the run, optionally kill the worker
(`crash`), take `steps` steps over `sleep` seconds reporting progress (and a preview picture), then
fail (`fail`, `raise`) or write `out.txt` atomically. Workers load it through the documented hook:

    python -m edalle.worker --kinds probe --runner-module worker_runners   (with tests/ on PYTHONPATH)

Each run appends `<job id> <attempt> <pid> <batch size>` to the file named in the payload's `log`:
one short O_APPEND write per line, so lines from several processes never interleave.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edalle.errors import RunFailed
from edalle.jobs import JobRequest
from edalle.outputs import write_atomic

TESTS_DIR = Path(__file__).resolve().parent
PROBE = 'probe'


class ProbeRunner:
    kind = PROBE
    batchable = True
    compat_prefix = PROBE

    def __init__(self, config: Any) -> None:
        self.config = config

    def run(self, items: Sequence[Any], ctx: Any) -> list[Any]:
        outcomes: list[Any] = []
        for item in items:
            job, payload = item.job, item.job.payload
            if payload.get('log'):
                fd = os.open(payload['log'], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.write(fd, f'{job.id} {job.attempt} {os.getpid()} {len(items)}\n'.encode())
                os.close(fd)
            crash = payload.get('crash')
            if crash == 'always' or (crash == 'first' and job.attempt == 1):
                os.kill(os.getpid(), signal.SIGKILL)
            steps = int(payload.get('steps', 1))
            slow = job.attempt <= int(payload.get('slow_attempts', 1_000))
            for step in range(steps):
                ctx.check_cancel()
                if slow:
                    time.sleep(float(payload.get('sleep', 0)) / steps)
                ctx.progress('probing', step + 1, steps, _preview() if payload.get('preview') else None)
            if payload.get('fail'):
                outcomes.append(RunFailed(payload['fail']))
                continue
            if payload.get('raise'):
                raise RuntimeError(payload['raise'])
            path = item.folder.file('out.txt')
            write_atomic(path, str(job.id).encode())
            outcomes.append({'path': item.folder.rel(path), 'pid': os.getpid()})
        return outcomes


def _preview() -> Any:
    from PIL import Image

    return Image.new('RGB', (16, 16), (200, 40, 40))


RUNNERS = {PROBE: ProbeRunner}


# ---- helpers for the tests ------------------------------------------------------------------------


def probe(user_id: int, **payload: Any) -> JobRequest:
    return JobRequest(PROBE, user_id, 1, 2, payload, PROBE)


def spawn_worker(db: Path, data_dir: Path, *args: str, output: Path | None = None) -> subprocess.Popen:
    """`python -m edalle.worker` serving probe jobs; its output goes to a file (a pipe could fill and block it)."""
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(TESTS_DIR), os.environ.get('PYTHONPATH', '')])}
    env['EDALLE_LOG_LEVEL'] = 'WARNING'
    command = [sys.executable, '-m', 'edalle.worker', '--db', str(db), '--data-dir', str(data_dir)]
    command += ['--kinds', PROBE, '--runner-module', 'worker_runners', '--poll', '0.2', *args]
    sink = open(output or os.devnull, 'ab')  # noqa: SIM115 - the child owns it from here
    try:
        return subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    finally:
        sink.close()


def job_row(db: Path, job_id: int) -> dict[str, Any]:
    with sqlite3.connect(db, timeout=10) as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute('SELECT * FROM jobs WHERE id = ?', (job_id,)).fetchone())


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f'condition not met within {timeout} s')
        time.sleep(interval)


def run_log(path: Path) -> list[tuple[int, int, int, int]]:
    if not path.exists():
        return []
    return [tuple(int(x) for x in line.split()) for line in path.read_text().splitlines()]  # type: ignore[misc]
