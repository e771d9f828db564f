"""The courier: watches the job store, edits status messages with progress, posts every result once.

Results go out with the bot token as channel messages (never through an interaction token, which dies
after 15 minutes), so a job that waited an hour in the queue still arrives. Exactly once, across
crashes and restarts:

- the store leases each finished, undelivered job to one poster (`claim_deliveries`), and the post is
  recorded with `mark_delivered`; a restarted bot simply finds the unrecorded ones again;
- a result normally *replaces* the job's status message (an edit: doing it twice changes nothing);
  when that message is gone, the result is a new message sent with the job's `delivery_nonce` and
  `enforce_nonce`, so a retry after a crash between sending and recording returns the first message;
- when the channel refuses (permissions), the result goes to the member by DM.

Progress edits are throttled to one per message every `progress_seconds`, and expand previews to one
every `preview_seconds` (Discord allows about 5 edits per 5 s per channel). A queued job's "N ahead" is
edited only when it crosses a step (`position_step`: next, 1, 2, then 3, 5, 10, 25, 50 …), at most one
such edit per channel every `QUEUE_EDIT_SPACING` seconds and `QUEUE_EDITS_PER_ROUND` per round, front
of the queue first: re-editing every queued message as the queue moved cost 27 edits per job with 200
queued (bench/RESULTS.md), and on Discord those edits would share the channel's budget with the results.
Each round posts results before it edits anything, so position edits never hold up a result for more than
a round's few edits.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord

from bot.errors import new_error_id
from bot.operations import Outgoing, describe, operation_cog, progress_text
from bot.utils import render
from bot.utils.images import load_upload, upload_limit
from bot.utils.views import status_view
from edalle.jobs import Delivery, Job, JobStatus
from edalle.jobs.result_store import materialize

if TYPE_CHECKING:
    from bot.bot import EDalleBot
    from bot.settings import Settings

log = logging.getLogger(__name__)

EDIT_AGE_LIMIT = 55 * 60.0  # Discord refuses edits of messages older than an hour in busy channels (30046)
MAX_DELIVERY_ATTEMPTS = 8  # past this a result that cannot be posted anywhere is recorded as undeliverable
POLL_SECONDS = 1.0
STOP_GRACE_SECONDS = 10.0  # a round in progress may finish this long after stop()
QUEUE_STEPS = (1, 2, 3, 5, 10, 25, 50, 100, 250, 500, 1000)  # "N ahead" is re-edited when N crosses one
QUEUE_EDIT_SPACING = 2.0  # seconds between two position edits in one channel: under half its edit budget
QUEUE_EDITS_PER_ROUND = 5  # then the round ends, and the next one posts finished results first


def position_step(ahead: int) -> int:
    """Which step of `QUEUE_STEPS` a queue position is in (0: next in line); an edit when it changes."""
    return bisect.bisect_right(QUEUE_STEPS, ahead)


@dataclass
class _Shown:
    """What a status message shows now, to skip edits that would change nothing."""

    text: str = ''
    edited_at: float = 0.0
    step: tuple[int, int] | None = None  # a queued job's (attempt, position step) as shown; None: not queued
    preview: str | None = None
    preview_at: float = 0.0


class Courier:
    def __init__(self, bot: EDalleBot) -> None:
        self.bot = bot
        self.owner = f'bot:{os.getpid()}:{secrets.token_hex(3)}'
        self._task: asyncio.Task[None] | None = None
        self._shown: dict[int, _Shown] = {}
        self._queue_edit_at: dict[int | None, float] = {}  # channel → its last position edit (monotonic)
        self._stopping = False
        self._busy = False  # inside a round: stop() lets it finish
        self.delivered: list[int] = []  # job ids this process posted (tests and logs)

    @property
    def settings(self) -> Settings:
        return self.bot.settings

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name='edalle-courier')

    async def stop(self) -> None:
        """Finish the round in progress (a result half-posted is recorded), then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        if not self._busy:
            task.cancel()  # idle: waiting for the store or for READY
        done, _ = await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
        if not done:
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def _run(self) -> None:
        await self.bot.wait_until_ready()
        backoff = 1.0
        while not self._stopping and not self.bot.is_closed():
            self._busy = True
            try:
                await self.tick()
                backoff = 1.0
            except Exception:  # a database or Discord outage: keep going, slower
                log.exception('courier: a round failed; trying again in %.0f s', backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
            finally:
                self._busy = False
            if self._stopping:
                break
            await self.bot.store.wait_for_change(POLL_SECONDS)

    async def tick(self) -> None:
        """One round: post finished jobs, then refresh the status of active ones."""
        deliveries = await self.bot.store.claim_deliveries(self.owner, 10, self.settings.delivery_lease_seconds)
        for delivery in deliveries:
            await self._deliver_one(delivery)
        await self._refresh_progress()

    # -- results ----------------------------------------------------------------------------------------------

    async def _deliver_one(self, delivery: Delivery) -> None:
        job = delivery.job
        try:
            message_id = await self.post_result(job)
        except discord.Forbidden as exc:  # neither the channel nor the member's DMs accept us: nothing left to try
            log.warning('job %s: undeliverable (channel %s and DMs refused): %s', job.id, job.channel_id, exc)
            message_id = None
        except Exception as exc:
            if delivery.attempt < MAX_DELIVERY_ATTEMPTS and not isinstance(exc, FileNotFoundError):
                # Left leased: another round (or a restarted bot) tries again when the lease runs out.
                log.warning('job %s: posting the result failed (attempt %d): %r', job.id, delivery.attempt, exc)
                return
            log.error('error %s: job %s could not be delivered; giving up', new_error_id(), job.id, exc_info=exc)
            message_id = None
        if await self.bot.store.mark_delivered(delivery, message_id):
            self.delivered.append(job.id)
            log.info('job %s (%s, %s) delivered as message %s', job.id, job.kind, job.status.value, message_id)
        self._shown.pop(job.id, None)

    async def outgoing_result(self, job: Job) -> Outgoing:
        """The message a finished job becomes (also used by `.job` to re-post it): its operation's cog renders a
        success; failures, cancels and progress read the same for every operation."""
        what = describe(self.bot, job)
        cog = operation_cog(self.bot, job.kind)
        if job.status is JobStatus.SUCCEEDED and cog is not None:
            return await cog.result_message(job)
        if job.status is JobStatus.FAILED:
            return Outgoing(render.failed(job, what))
        if job.status is JobStatus.CANCELLED:
            return Outgoing(render.cancelled(job, what))
        return Outgoing(progress_text(self.bot, job, None), [], status_view(job.id))

    async def post_result(self, job: Job) -> int | None:
        outgoing = await self.outgoing_result(job)
        channel = self.bot.get_partial_messageable(job.channel_id or 0, guild_id=job.guild_id)
        if job.status_message_id is not None:
            try:
                message = channel.get_partial_message(job.status_message_id)
                await message.edit(content=outgoing.content, attachments=outgoing.files(), view=outgoing.view)
                return job.status_message_id
            except discord.NotFound:
                log.info('job %s: its status message is gone; posting the result as a new message', job.id)
            except discord.DiscordServerError:
                raise  # the edit may have been saved: edit again next round rather than post a second copy
            except discord.HTTPException as exc:  # too old to edit (30046), or no longer allowed to edit
                log.info('job %s: could not edit its status message (%s); posting a new one', job.id, exc)
        if job.channel_id is None:  # no channel recorded: straight to DMs
            return await self._post_by_dm(job, outgoing)
        try:
            sent = await channel.send(
                outgoing.content,
                files=outgoing.files(),
                view=outgoing.view or discord.utils.MISSING,
                nonce=job.delivery_nonce,
            )
            return sent.id
        except discord.Forbidden:
            return await self._post_by_dm(job, outgoing)

    async def _post_by_dm(self, job: Job, outgoing: Outgoing) -> int | None:
        user = self.bot.get_user(job.user_id) or await self.bot.fetch_user(job.user_id)
        note = f'\n(I could not post this in <#{job.channel_id}>: I am missing permissions there.)' if job.channel_id else ''
        sent = await user.send(
            outgoing.content + note,
            files=outgoing.files(),
            view=outgoing.view or discord.utils.MISSING,
            nonce=job.delivery_nonce,
        )
        log.info('job %s: posted to the member by DM (channel %s refused)', job.id, job.channel_id)
        return sent.id

    # -- progress ---------------------------------------------------------------------------------------------

    async def _refresh_progress(self) -> None:
        active = await self.bot.store.queue_snapshot(limit=200)
        ahead = 0
        now = time.monotonic()
        alive = set()
        queue_edits = 0
        for job in active:
            position = ahead if job.status is JobStatus.QUEUED else None
            if job.status is JobStatus.QUEUED:
                ahead += 1
            if job.status_message_id is None:
                continue
            alive.add(job.id)
            if time.time() - discord.utils.snowflake_time(job.status_message_id).timestamp() > EDIT_AGE_LIMIT:
                continue
            shown = self._shown.setdefault(job.id, _Shown(edited_at=now))  # the first text was posted just now
            if shown.step is None and not shown.text and position is not None:  # the queued text posted on enqueue
                shown.step = (job.attempt, position_step(position))
            text = progress_text(self.bot, job, position)
            if position is not None:  # queued: edit only when its position crosses a step, a few per round
                step = (job.attempt, position_step(position))
                channel_free = self._queue_edit_at.get(job.channel_id, 0.0) + QUEUE_EDIT_SPACING <= now
                if (
                    step == shown.step
                    or queue_edits >= QUEUE_EDITS_PER_ROUND
                    or not channel_free
                    or now - shown.edited_at < self.settings.progress_seconds
                ):
                    continue
                await self._edit_progress(job, text, None)
                shown.text, shown.edited_at, shown.step = text, now, step
                self._queue_edit_at[job.channel_id] = now
                queue_edits += 1
                continue
            shown.step = None
            cog = operation_cog(self.bot, job.kind)
            preview = job.preview_path if cog is not None and cog.shows_previews else None
            new_preview = (
                preview is not None and preview != shown.preview and now - shown.preview_at >= self.settings.preview_seconds
            )
            if (text == shown.text and not new_preview) or now - shown.edited_at < self.settings.progress_seconds:
                continue
            await self._edit_progress(job, text, preview if new_preview else None)
            shown.text, shown.edited_at = text, now
            if new_preview:
                shown.preview, shown.preview_at = preview, now
        for job_id in set(self._shown) - alive:
            self._shown.pop(job_id, None)
        for channel_id, at in list(self._queue_edit_at.items()):
            if now - at > QUEUE_EDIT_SPACING:
                del self._queue_edit_at[channel_id]

    async def _edit_progress(self, job: Job, text: str, preview: str | None) -> None:
        channel = self.bot.get_partial_messageable(job.channel_id or 0, guild_id=job.guild_id)
        message = channel.get_partial_message(job.status_message_id or 0)
        kwargs: dict = {}
        if preview is not None:
            try:
                await materialize(self.bot.results, self.settings.data_dir, job.id, preview, refresh=True)
            except Exception as exc:  # a preview is a courtesy, like the edit itself
                log.info('job %s: could not fetch its preview: %r', job.id, exc)
            path = self.settings.data_dir / preview
            if path.is_file():
                limit = upload_limit(
                    self.bot.get_guild(job.guild_id) if job.guild_id else None, self.settings.max_upload_bytes
                )
                kwargs['attachments'] = [(await load_upload(path, limit, f'job-{job.id}-preview.png')).file()]
        try:
            await message.edit(content=text, view=status_view(job.id), **kwargs)
        except discord.HTTPException as exc:  # deleted, too old, no access: progress is a courtesy, the result is not
            log.info('job %s: progress edit failed: %s', job.id, exc)


async def setup(bot: EDalleBot) -> None:
    """Loaded as an extension, so the bot's module never imports the courier (nor the courier the bot, but for types)."""
    bot.courier = Courier(bot)
    bot.courier.start()


async def teardown(bot: EDalleBot) -> None:
    await bot.courier.stop()
