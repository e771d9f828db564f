"""The courier's queued-position edits: only when "N ahead" crosses a step, front of the queue first, and
spaced out per channel, so 200 jobs queued in one channel do not cost ~27 edits each (bench/RESULTS.md)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import datetime, timezone
from types import SimpleNamespace

import discord

from bot import delivery
from bot.delivery import QUEUE_EDIT_SPACING, Courier, position_step
from edalle.jobs import Job, JobStatus

STATUS_MESSAGE = discord.utils.time_snowflake(datetime.now(timezone.utc))


def job(job_id: int, status: JobStatus = JobStatus.QUEUED, channel_id: int = 20) -> Job:
    fields = {name: None for name in Job.__slots__}  # type: ignore[attr-defined]
    fields.update(
        id=job_id, kind='imagine', status=status, user_id=job_id, guild_id=10, channel_id=channel_id,
        compat_key='imagine:tiny:2', payload={'prompt': 'a cat'}, priority=0, available_at=0.0, attempt=0,
        handbacks=0, max_attempts=3, cancel_requested=False, created_at=0.0, status_message_id=STATUS_MESSAGE,
        delivery_attempt=0,
    )  # fmt: skip
    return Job(**fields)


def test_position_steps_are_exact_at_the_front_and_coarse_behind() -> None:
    assert [position_step(n) for n in (0, 1, 2, 3, 4, 5, 9, 10, 24, 25, 199, 250)] == [0, 1, 2, 3, 3, 4, 4, 5, 5, 6, 8, 9]


def test_a_draining_queue_of_200_in_one_channel_costs_a_few_position_edits_per_job(monkeypatch) -> None:
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(delivery.time, 'monotonic', lambda: clock.now)
    queue = [job(i) for i in range(1, 201)]
    running: list[Job] = []
    edits: list[tuple[float, int, str]] = []
    store = SimpleNamespace()

    async def queue_snapshot(limit: int = 20) -> list[Job]:
        return (running + queue)[:limit]

    store.queue_snapshot = queue_snapshot
    bot = SimpleNamespace(store=store, settings=SimpleNamespace(progress_seconds=3.0, preview_seconds=15.0), cogs={})
    courier = Courier(bot)  # type: ignore[arg-type]

    async def edit(job: Job, text: str, preview: str | None) -> None:
        edits.append((clock.now, job.id, text))

    courier._edit_progress = edit  # type: ignore[method-assignment]

    async def main() -> None:
        await courier._refresh_progress()  # the courier first sees the queue its status messages were posted for
        while queue or running:
            for _ in range(24):  # rounds every 0.1 s: the worker commits progress often
                clock.now += 0.1
                await courier._refresh_progress()
            running[:] = [dataclasses.replace(j, status=JobStatus.RUNNING, stage='generating') for j in queue[:4]]
            del queue[:4]

    asyncio.run(main())
    queued_edits = [(at, job_id) for at, job_id, text in edits if 'queued' in text]
    per_job = Counter(job_id for _, job_id in queued_edits)
    assert len(queued_edits) / 200 <= 3, (len(queued_edits), per_job.most_common(3))  # was ~27 per job
    times = [at for at, _ in queued_edits]  # one channel: its position edits are spaced out
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= QUEUE_EDIT_SPACING - 1e-9
    # Someone about to run is told so: the jobs that waited longest got "next" (0 ahead) before they ran.
    told_next = {job_id for _, job_id, text in edits if 'queued, next' in text or '0 ahead' in text}
    assert len(told_next) >= 20, len(told_next)
    # Running jobs still get their progress edits (throttled as before).
    assert any('generating' in text for _, _, text in edits)
    print(f'\n{len(queued_edits)} position edits for 200 queued jobs, {len(edits)} edits in all')
