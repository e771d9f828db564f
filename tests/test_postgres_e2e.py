"""Scale-out end to end: `edalle bot --no-worker` and two `edalle worker --database-url …` processes on one
PostgreSQL job store, through the fake Discord, on the `tiny` preset.

Each process has a data dir of its own, as on separate hosts: the bot has no weights and never sees a
worker's disk, so every picture it posts came through the result store (`EDALLE_RESULT_STORE=database`),
and the expand worker fetched its parent's candidate the same way when the imagine ran on the other worker.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from discord_fake import ThreadedFakeDiscord
from discord_fake.state import image_size
from pg_server import shared_server

from bot.cogs.expand import EXPAND
from bot.cogs.imagine import PICK
from bot.utils import custom_ids
from edalle.jobs import BOT_WIDE, Job, JobStatus
from edalle.jobs.postgres import PostgresJobStore

pytestmark = pytest.mark.slow
RESULT_TIMEOUT = 180.0  # the first job waits for a worker to load and compile


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(('DISCORD_', 'EDALLE_', 'AWS_'))}
    return {**keep, 'EDALLE_LOG_LEVEL': 'INFO', **extra}


def wait_for_log(log: Path, pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text(errors='replace'))
        if match:
            return match
        time.sleep(0.1)
    raise AssertionError(f'no {pattern!r} in {log.name} within {timeout} s:\n{log.read_text(errors="replace")[-3000:]}')


def host_dir(root: Path, shared: Path) -> Path:
    """A host's own data dir; only the read-only model files (and JAX's compile cache) are shared, to save time."""
    root.mkdir(parents=True)
    for name in ('models', 'jax-cache'):
        (shared / name).mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(shared / name, target_is_directory=True)
    return root


def read_jobs(url: str, ids: list[int]) -> list[Job]:
    async def read() -> list[Job]:
        store = await PostgresJobStore.open(url)
        try:
            return await store.get_many(ids)
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.fixture
def stopped_at_exit() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_bot_and_two_workers_on_postgres_post_every_result_once(
    fake_discord_server: ThreadedFakeDiscord, bot_data_dir: Path, tmp_path: Path, stopped_at_exit: list[Any]
) -> None:
    from edalle.weights import ensure_tiny

    ensure_tiny(bot_data_dir)  # once per session; the workers share these read-only files
    url = shared_server().create_database('e2e')

    async def prepare() -> None:
        store = await PostgresJobStore.open(url)
        await store.set_setting(BOT_WIDE, 'cooldown_seconds', 0, actor_id=None, reason='tests')
        await store.set_setting(BOT_WIDE, 'expand_steps', 3, actor_id=None, reason='tests')
        await store.close()

    asyncio.run(prepare())
    server, fake = fake_discord_server, fake_discord_server.fake
    shared = {'EDALLE_DATABASE_URL': url, 'EDALLE_RESULT_STORE': 'database', 'EDALLE_PRESET': 'tiny'}
    logs = {name: tmp_path / f'{name}.log' for name in ('worker-a', 'worker-b', 'bot')}
    for name in ('worker-a', 'worker-b'):
        data = host_dir(tmp_path / name, bot_data_dir)
        argv = [sys.executable, '-m', 'edalle.worker', '--data-dir', str(data), '--lease', '20', '--poll', '5']
        argv += ['--worker-id', name]
        env = clean_env({**shared, 'EDALLE_DATA_DIR': str(data)})
        stopped_at_exit.append(subprocess.Popen(argv, env=env, stdout=logs[name].open('wb'), stderr=subprocess.STDOUT))
    bot_dir = tmp_path / 'bot'  # no models, no worker files: only what the result store hands over
    bot_env = clean_env(
        {
            **shared,
            **server.env,
            'EDALLE_DATA_DIR': str(bot_dir),
            'EDALLE_GUILD_READY_TIMEOUT': '0.05',
            'EDALLE_SYNC_COMMANDS': 'always',
            'EDALLE_PROGRESS_SECONDS': '0.5',
            'EDALLE_DELIVERY_LEASE_SECONDS': '10',
        }
    )
    argv = [sys.executable, '-m', 'edalle.cli', 'bot', '--no-worker']
    bot = subprocess.Popen(argv, cwd=tmp_path, env=bot_env, stdout=logs['bot'].open('wb'), stderr=subprocess.STDOUT)
    stopped_at_exit.append(bot)
    for name in ('worker-a', 'worker-b'):
        wait_for_log(logs[name], rf'worker {name}: ready', 120)
    server.call(fake.wait_for_ready(timeout=60), timeout=70)

    def job_id_in(message: Any) -> int:
        return int(re.search(r'^job #(\d+)', message.content, re.MULTILINE)[1])  # type: ignore[index]

    def is_grid(message: Any) -> bool:
        return any(c.startswith('ed:pick:') for c in message.custom_ids()) and bool(message.attachments)

    statuses = []
    for user, prompt in ((fake.alice, 'a lighthouse in a storm'), (fake.bob, 'a red fox in the snow')):
        server.send_user_message(fake.channel, user, f'.imagine {prompt}')
        statuses.append(server.call(fake.wait_for_message(fake.channel, lambda m, p=prompt: p in m.content, timeout=30), 40))
    grids = [server.call(fake.wait_for_edit(s, is_grid, timeout=RESULT_TIMEOUT), RESULT_TIMEOUT + 10) for s in statuses]
    assert all(len(g.attachments) == 1 and image_size(g.attachments[0].data)[0] > 3 * 256 for g in grids)

    alice_job = job_id_in(statuses[0])
    server.call(fake.click_button(grids[0], PICK.id(alice_job, 2), fake.alice))
    picked = server.call(fake.wait_for_message(fake.channel, lambda m: 'candidate 3 of job' in m.content, timeout=30), 40)
    assert image_size(picked.attachments[0].data) == (256, 256)
    server.call(fake.click_button(picked, EXPAND.id(alice_job, 2, '16x9'), fake.alice))
    expand_status = server.call(fake.wait_for_message(fake.channel, lambda m: 'expand to 16:9' in m.content, timeout=30), 40)
    expand_id = job_id_in(expand_status)

    def widened(message: Any) -> bool:
        return 'failed' in message.content or custom_ids.info(expand_id, 0) in message.custom_ids()

    done = server.call(fake.wait_for_edit(expand_status, widened, timeout=RESULT_TIMEOUT), RESULT_TIMEOUT + 10)
    assert done.attachments and image_size(done.attachments[0].data) == (448, 256), done.content

    # A member's own picture: the bot stores it in the result store, a worker on another host fetches it.
    server.send_user_message(fake.channel, fake.bob, '.expand 2:1', attachments=[('fox.png', picked.attachments[0].data)])
    upload_status = server.call(fake.wait_for_message(fake.channel, lambda m: 'expand to 2:1' in m.content, timeout=30), 40)
    expand_id = job_id_in(upload_status)
    done = server.call(fake.wait_for_edit(upload_status, widened, timeout=RESULT_TIMEOUT), RESULT_TIMEOUT + 10)
    assert done.attachments and image_size(done.attachments[0].data) == (512, 256), done.content
    assert not (bot_dir / 'uploads').exists()  # kept in the result store, not on the bot's disk
    fetched = [p for name in ('worker-a', 'worker-b') for p in (tmp_path / name / 'uploads').glob('*.png')]
    assert len(fetched) == 1  # the worker that widened it fetched it

    time.sleep(1.0)  # a duplicate post would show up by now
    ids = [alice_job, job_id_in(statuses[1]), job_id_in(expand_status), expand_id]
    jobs = {job.id: job for job in read_jobs(url, ids)}
    assert all(jobs[i].status is JobStatus.SUCCEEDED and jobs[i].delivered_at is not None for i in ids)
    assert {jobs[i].worker_id for i in ids[:2]} == {'worker-a', 'worker-b'}  # the two imagines ran on both hosts
    pictures = [m for m in fake.bot_messages(fake.channel) if m.attachments]
    assert len(pictures) == 5  # two grids, one candidate, two widened pictures: each posted once
    assert not (bot_dir / 'models').exists()  # the bot never had weights: every picture came through the store
    assert sorted(p.name for p in (bot_dir / 'images' / str(alice_job)).rglob('grid.png'))

    bot.send_signal(signal.SIGTERM)
    assert bot.wait(60) == 0
    for process in stopped_at_exit[:2]:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    for name, log in logs.items():
        assert 'Traceback' not in log.read_text(errors='replace'), name
