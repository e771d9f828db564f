"""`edalle bot` as a real subprocess, configured only by environment variables, against the fake Discord.

It starts the bot and a supervised tiny worker child; the test kills the worker in the middle of a job
(the supervisor restarts it, the job's lease expires, the job runs again and its result arrives once),
then stops everything with SIGTERM. First-run mistakes each end with one sentence naming the fix.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from discord_fake import ThreadedFakeDiscord

from edalle.jobs import Job, SqliteJobStore

REPO = Path(__file__).resolve().parents[1]


def bot_env(extra: dict[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(('DISCORD_', 'EDALLE_'))}
    return {**keep, 'EDALLE_GUILD_READY_TIMEOUT': '0.05', 'EDALLE_SYNC_COMMANDS': 'always', **extra}


def start_bot(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """`edalle bot` in `cwd` (no .env there), logging to `log`."""
    return subprocess.Popen(
        [sys.executable, '-m', 'edalle.cli', 'bot'], cwd=cwd, env=env, stdout=log.open('wb'), stderr=subprocess.STDOUT
    )


def wait_for_log(log: Path, pattern: str, timeout: float, after: int = 0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.compile(pattern).search(log.read_text(errors='replace'), after)
        if match:
            return match
        time.sleep(0.1)
    raise AssertionError(f'no {pattern!r} in the log within {timeout} s:\n{log.read_text(errors="replace")[-3000:]}')


def read_job(db: Path, job_id: int) -> Job:
    async def read() -> Job:
        store = await SqliteJobStore.open(db)
        try:
            return await store.get(job_id)
        finally:
            await store.close()

    return asyncio.run(read())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_entry_point_runs_bot_and_supervised_worker(
    fake_discord_server: ThreadedFakeDiscord, bot_data_dir: Path, tmp_path: Path
) -> None:
    server = fake_discord_server
    fake = server.fake
    db = bot_data_dir / 'entrypoint.db'
    env = bot_env(
        {
            **server.env,
            'EDALLE_DATA_DIR': str(bot_data_dir),
            'EDALLE_DB': str(db),
            'EDALLE_PRESET': 'tiny',
            'EDALLE_WORKER_ARGS': '--lease 5 --poll 0.2',
            'EDALLE_PROGRESS_SECONDS': '0.5',
        }
    )
    log = tmp_path / 'bot.log'
    bot = start_bot(env, tmp_path, log)
    try:
        first_worker = int(wait_for_log(log, r'worker started \(pid (\d+)\)', 60)[1])
        server.call(fake.wait_for_ready(timeout=60), timeout=70)
        wait_for_log(log, r'connected as', 30)

        server.send_user_message(fake.channel, fake.alice, '.imagine a lighthouse in a storm')
        status = server.call(fake.wait_for_message(fake.channel, timeout=30), timeout=40)
        job_id = int(re.search(r'job #(\d+)', status.content)[1])  # type: ignore[index]

        deadline = time.monotonic() + 120
        while read_job(db, job_id).status.value != 'running':
            assert time.monotonic() < deadline, 'the job never started'
            time.sleep(0.1)
        os.kill(first_worker, signal.SIGKILL)  # mid-job
        wait_for_log(log, r'worker \(pid \d+\) exited with -9', 30)
        second_worker = int(wait_for_log(log, rf'worker started \(pid (?!{first_worker}\))(\d+)\)', 30)[1])

        def is_grid(message: Any) -> bool:
            return message.id == status.id and any(c.startswith('ed:pick:') for c in message.custom_ids())

        grid = server.call(fake.wait_for_message(None, is_grid, timeout=180, edited=True), timeout=190)
        assert len(grid.attachments) == 1
        # the edit lands before the bot records the delivery: give the record a moment
        deadline = time.monotonic() + 10
        while (job := read_job(db, job_id)).delivered_at is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job.status.value == 'succeeded' and job.attempt >= 2 and job.delivered_at is not None
        time.sleep(1.0)
        grids = [m for m in fake.bot_messages(fake.channel) if any(c.startswith('ed:pick:') for c in m.custom_ids())]
        assert [m.id for m in grids] == [status.id]  # the result arrived once

        bot.send_signal(signal.SIGTERM)
        assert bot.wait(60) == 0
        assert not alive(second_worker)
        text = log.read_text(errors='replace')
        assert 'stopping the worker' in text and 'Traceback' not in text
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait()


def test_first_run_problems_each_get_one_clear_message(fake_discord_server: ThreadedFakeDiscord, tmp_path: Path) -> None:
    server = fake_discord_server

    def run_bot(extra: dict[str, str]) -> tuple[int, str]:
        log = tmp_path / 'bot.log'
        process = start_bot(bot_env({'EDALLE_DATA_DIR': str(tmp_path / 'data'), **extra}), tmp_path, log)
        code = process.wait(60)
        return code, log.read_text(errors='replace')

    code, text = run_bot({})
    assert code == 2 and 'DISCORD_TOKEN is not set' in text and '.env' in text and 'Traceback' not in text

    code, text = run_bot({**server.env, 'EDALLE_PRESET': 'mini', 'EDALLE_DOWNLOAD': '0'})
    assert code == 2 and 'edalle models download --preset mini' in text and 'Traceback' not in text

    code, text = run_bot({**server.env, 'EDALLE_PRESET': 'mini', 'HF_HUB_OFFLINE': '1'})  # fetching on first start fails
    assert code == 2 and 'Fetching them failed' in text and 'offline mode is on' in text and 'Traceback' not in text
    assert 'edalle models import DIR --preset mini' in text and '--no-worker' in text

    code, text = run_bot({**server.env, 'DISCORD_TOKEN': 'not-the-token', 'EDALLE_WORKER': '0'})
    assert code == 2 and 'refused the bot token' in text and 'Reset Token' in text and 'Traceback' not in text

    server.fake.set_privileged_intents(message_content=False)
    code, text = run_bot({**server.env, 'EDALLE_WORKER': '0'})
    assert code == 2 and 'MESSAGE CONTENT INTENT' in text and 'Traceback' not in text
