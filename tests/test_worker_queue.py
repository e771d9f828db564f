"""Worker processes on one database: exactly-once under load, kill -9 mid-job, poison jobs, SIGTERM
(finish, or hand back), cancellation between steps, failures, progress and previews.

The workers are real `python -m edalle.worker` processes serving the `probe` kind from
tests/worker_runners.py, so the queue mechanics are tested without loading a model.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from worker_runners import job_row, probe, run_log, spawn_worker, wait_until

from edalle.jobs import JobRequest, SqliteJobStore
from edalle.worker.main import INTERNAL_ERROR

pytestmark = pytest.mark.timeout(180)


def enqueue(db: Path, requests: list[JobRequest]) -> list[int]:
    async def main():
        store = await SqliteJobStore.open(db)
        try:
            for key, value in {'cooldown_seconds': 0, 'pending_per_user': 1000, 'queue_cap': 100_000}.items():
                await store.set_setting(0, key, value, actor_id=None)
            return [(await store.enqueue(request)).job.id for request in requests]
        finally:
            await store.close()

    return asyncio.run(main())


def cancel(db: Path, job_id: int) -> None:
    async def main():
        store = await SqliteJobStore.open(db)
        try:
            await store.cancel(job_id)
        finally:
            await store.close()

    asyncio.run(main())


def wait_exit(process, timeout: float) -> int:
    try:
        return process.wait(timeout)
    except BaseException:
        process.kill()
        process.wait()
        raise


@pytest.fixture
def paths(tmp_path):
    return tmp_path / 'edalle.db', tmp_path / 'data', tmp_path / 'runs.log'


def test_a_thousand_jobs_on_three_workers_each_run_exactly_once(paths, tmp_path):
    db, data, log = paths
    # 10 ms of work per job (10 s for one worker alone): long enough that a worker which starts a few
    # seconds after the others on a loaded machine still finds work, so sharing is certain, not a race
    ids = enqueue(db, [probe(user_id=i % 10, log=str(log), sleep=0.01) for i in range(1000)])
    started = time.monotonic()
    workers = [spawn_worker(db, data, '--batch', '4', '--exit-when-idle', output=tmp_path / f'w{i}.out') for i in range(3)]
    codes = [wait_exit(w, 120) for w in workers]
    elapsed = time.monotonic() - started
    assert codes == [0, 0, 0], [(tmp_path / f'w{i}.out').read_text()[-2000:] for i in range(3)]

    runs = run_log(log)
    per_job = Counter(job_id for job_id, *_ in runs)
    assert sorted(per_job) == ids and set(per_job.values()) == {1}  # every job ran, and exactly once
    assert len({pid for _, _, pid, _ in runs}) >= 2  # the work really was shared
    assert max(size for *_, size in runs) > 1  # and batched
    rows = [job_row(db, job_id) for job_id in ids]
    assert {(r['status'], r['attempt']) for r in rows} == {('succeeded', 1)}
    assert all((data / f'images/{job_id}/1/out.txt').read_text() == str(job_id) for job_id in ids)
    assert not [p for p in data.rglob('*') if p.name.startswith('.')]  # no temporary file left behind
    print(f'\n1000 jobs, 3 workers, batch 4: {elapsed:.1f} s including start-up ({1000 / elapsed:.0f} jobs/s)')


def test_kill_9_in_the_middle_of_a_job_the_next_worker_runs_it_again(paths, tmp_path):
    db, data, log = paths
    [job_id] = enqueue(db, [probe(user_id=1, log=str(log), steps=30, sleep=3.0, slow_attempts=1)])
    first = spawn_worker(db, data, '--lease', '1', output=tmp_path / 'w1.out')
    try:
        row = wait_until(lambda: (r := job_row(db, job_id))['step'] and r['step'] >= 3 and r, timeout=30)
    finally:
        first.send_signal(signal.SIGKILL)  # kill -9, in the middle of the job
        first.wait()
    assert row['status'] == 'running' and row['stage'] == 'probing' and row['total'] == 30  # progress was reported
    second = spawn_worker(db, data, '--lease', '1', '--max-jobs', '1', output=tmp_path / 'w2.out')
    assert wait_exit(second, 60) == 0
    row = job_row(db, job_id)
    assert (row['status'], row['attempt']) == ('succeeded', 2)
    runs = run_log(log)
    assert [attempt for _, attempt, _, _ in runs] == [1, 2] and runs[0][2] == first.pid and runs[1][2] == second.pid
    assert sorted(p.name for p in (data / f'images/{job_id}').iterdir()) == ['2']  # the dead attempt's folder is gone


def test_a_job_that_kills_its_worker_every_time_ends_failed_and_the_queue_moves_on(paths, tmp_path):
    db, data, log = paths
    [poison] = enqueue(db, [probe(user_id=1, log=str(log), crash='always')])
    codes = []
    while job_row(db, poison)['status'] in ('queued', 'running') and len(codes) < 8:
        time.sleep(0.6)  # let the dead worker's lease run out
        worker = spawn_worker(db, data, '--lease', '0.5', '--exit-when-idle', output=tmp_path / 'w.out')
        codes.append(wait_exit(worker, 30))
    row = job_row(db, poison)
    assert codes == [-signal.SIGKILL] * 3 + [0]
    assert row['status'] == 'failed' and 'stopped its worker 3 times' in row['error']
    assert len(run_log(log)) == 3
    [healthy] = enqueue(db, [probe(user_id=2)])
    assert wait_exit(spawn_worker(db, data, '--exit-when-idle'), 30) == 0
    assert job_row(db, healthy)['status'] == 'succeeded'


def test_sigterm_lets_the_running_job_finish_and_claims_nothing_more(paths, tmp_path):
    db, data, log = paths
    running, waiting = enqueue(db, [probe(user_id=1, steps=10, sleep=1.5), probe(user_id=2)])
    worker = spawn_worker(db, data, output=tmp_path / 'w.out')
    wait_until(lambda: job_row(db, running)['status'] == 'running', timeout=30)
    worker.send_signal(signal.SIGTERM)
    assert wait_exit(worker, 30) == 0
    assert job_row(db, running)['status'] == 'succeeded'
    assert job_row(db, waiting)['status'] == 'queued'


def test_sigterm_past_the_grace_hands_the_job_back_without_using_an_attempt(paths, tmp_path):
    db, data, log = paths
    [job_id] = enqueue(db, [probe(user_id=1, log=str(log), steps=200, sleep=20, slow_attempts=1)])
    worker = spawn_worker(db, data, '--grace', '0.3', output=tmp_path / 'w.out')
    wait_until(lambda: (job_row(db, job_id)['step'] or 0) >= 1, timeout=30)
    stopped_at = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert wait_exit(worker, 30) == 0
    handed_back_in = time.monotonic() - stopped_at
    row = job_row(db, job_id)
    assert (row['status'], row['attempt'], row['handbacks'], row['worker_id']) == ('queued', 1, 1, None)
    assert not (data / f'images/{job_id}/1').exists()
    assert wait_exit(spawn_worker(db, data, '--exit-when-idle'), 30) == 0
    row = job_row(db, job_id)
    assert (row['status'], row['attempt'] - row['handbacks']) == ('succeeded', 1)
    print(f'\nSIGTERM with --grace 0.3: job handed back and worker exited in {handed_back_in:.2f} s')


def test_cancelling_a_running_job_stops_it_between_steps(paths, tmp_path):
    db, data, log = paths
    slow, quick = enqueue(db, [probe(user_id=1, steps=200, sleep=20), probe(user_id=2)])
    worker = spawn_worker(db, data, '--lease', '1', '--exit-when-idle', output=tmp_path / 'w.out')
    wait_until(lambda: (job_row(db, slow)['step'] or 0) >= 1, timeout=30)
    asked = time.monotonic()
    cancel(db, slow)
    wait_until(lambda: job_row(db, slow)['status'] == 'cancelled', timeout=10)
    stopped_in = time.monotonic() - asked
    assert wait_exit(worker, 30) == 0
    assert job_row(db, quick)['status'] == 'succeeded'  # the worker went on with the queue
    assert not (data / f'images/{slow}').exists() or not any((data / f'images/{slow}').iterdir())
    assert stopped_in < 5
    print(f'\ncancel of a running job took effect in {stopped_in:.2f} s (lease 1 s, renewals every 0.25 s)')


def test_failures_a_readable_error_fails_at_once_a_crash_is_retried_then_fails(paths, tmp_path):
    db, data, log = paths
    readable_job = probe(user_id=1, fail='That prompt made the model sad.')
    broken_job = probe(user_id=2, log=str(log), **{'raise': 'boom'})
    readable, broken = enqueue(db, [readable_job, broken_job])
    worker = spawn_worker(db, data, '--exit-when-idle', '--retry-backoff', '0', output=tmp_path / 'w.out')
    assert wait_exit(worker, 60) == 0
    row = job_row(db, readable)
    assert (row['status'], row['attempt'], row['error']) == ('failed', 1, 'That prompt made the model sad.')
    row = job_row(db, broken)
    assert (row['status'], row['attempt'], row['error']) == ('failed', 3, INTERNAL_ERROR)
    assert 'boom' not in row['error'] and len(run_log(log)) == 3
    assert 'RuntimeError: boom' in (tmp_path / 'w.out').read_text()  # the traceback goes to the log, not the user


def test_previews_are_written_atomically_and_recorded(paths, tmp_path):
    db, data, log = paths
    [job_id] = enqueue(db, [probe(user_id=1, steps=4, sleep=1.5, preview=True)])
    assert wait_exit(spawn_worker(db, data, '--exit-when-idle', output=tmp_path / 'w.out'), 30) == 0
    row = job_row(db, job_id)
    assert row['status'] == 'succeeded' and row['preview_path'] == f'images/{job_id}/1/preview.png'
    assert (data / row['preview_path']).read_bytes().startswith(b'\x89PNG')


def test_the_worker_refuses_unknown_kinds_clearly(paths, tmp_path):
    db, data, _ = paths
    worker = spawn_worker(db, data, '--kinds', 'probe,paint', output=tmp_path / 'w.out')
    assert wait_exit(worker, 30) == 2
    assert 'unknown job kind(s) paint' in (tmp_path / 'w.out').read_text()


def test_the_worker_needs_no_model_for_other_kinds():
    # The engine (jax, torch) is only imported when an imagine or expand runner is built.
    import subprocess
    import sys

    code = 'import sys, edalle.worker.main; print(any(m in sys.modules for m in ("jax", "torch", "edalle.engine")))'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == 'False'
