"""A `tiny` worker process serving a test database, for the bot's end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from bot.supervisor import worker_argv
from edalle.jobs import BOT_WIDE, SqliteJobStore


@contextlib.contextmanager
def serving_tiny_worker(data_dir: Path, db: Path, *, expand_steps: int) -> Iterator[Path]:
    """`db` with cooldown off and `expand_steps` per expand, served by a `tiny` worker started as the bot's
    supervisor starts it, until the block ends (then stopped, killed if it will not stop)."""

    async def prepare() -> None:
        store = await SqliteJobStore.open(db)
        await store.set_setting(BOT_WIDE, 'cooldown_seconds', 0, actor_id=None, reason='tests')
        await store.set_setting(BOT_WIDE, 'expand_steps', expand_steps, actor_id=None, reason='tests')
        await store.close()

    asyncio.run(prepare())
    argv = worker_argv(preset='tiny', data_dir=data_dir, database=db, extra=['--lease', '20', '--poll', '0.2'])
    worker = subprocess.Popen(argv, env={**os.environ, 'EDALLE_LOG_LEVEL': 'WARNING'})
    try:
        yield db
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
