"""A member's jobs: `.job <id>` (re-post a result and its controls), `.info`, `.queue`, `.cancel <id>`, ✖, ℹ️, 🎞️.

Midjourney's `/show <job>` idea: any finished job's controls can be brought back, because the controls
are only ids and the job is in the store.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.operations import lineage_text, operation_cog, reencoded_note
from bot.utils import render
from bot.utils.checks import is_bot_admin, require_owner
from bot.utils.images import load_upload, upload_limit
from bot.utils.results import resolve
from edalle.errors import EdalleError, JobNotFound
from edalle.jobs import Job, JobStatus
from edalle.jobs.result_store import materialize
from edalle.operations.base import TIMELAPSE, media_of, picture_of

if TYPE_CHECKING:
    from bot.bot import EDalleBot

log = logging.getLogger(__name__)

NO_PINGS = discord.AllowedMentions.none()


class NoTimelapse(EdalleError):
    """That job has no time-lapse."""


class Jobs(commands.Cog):
    """Look up, re-post and cancel jobs; see the queue and your quota."""

    def __init__(self, bot: EDalleBot) -> None:
        self.bot = bot

    async def visible_job(self, ctx: commands.Context[EDalleBot], job_id: int) -> Job:
        """A job from this server (or the member's own); others look like unknown ids."""
        job = await self.bot.store.get(job_id)
        here = ctx.guild.id if ctx.guild else None
        if job.user_id != ctx.author.id and (here is None or job.guild_id != here):
            raise JobNotFound(job_id)
        return job

    @commands.hybrid_command(name='job')
    @app_commands.describe(job_id='The job number, as shown on its message')
    async def job(self, ctx: commands.Context[EDalleBot], job_id: int) -> None:
        """Post a job's result again, with working buttons (or its progress, if it is not done)."""
        job = await self.visible_job(ctx, job_id)
        if ctx.interaction is not None:
            await ctx.defer(ephemeral=True)
        outgoing = await self.bot.courier.outgoing_result(job)
        kwargs = {'files': outgoing.files(), 'allowed_mentions': NO_PINGS}
        if outgoing.view is not None:
            kwargs['view'] = outgoing.view
        if ctx.interaction is None:
            await ctx.reply(outgoing.content, mention_author=False, **kwargs)
        else:  # posted with the bot token, as every result is; the interaction only gets a note
            await ctx.channel.send(outgoing.content, **kwargs)
            await ctx.interaction.edit_original_response(content=f'Posted job #{job.id} again.')

    @commands.hybrid_command(name='info')
    async def info(self, ctx: commands.Context[EDalleBot]) -> None:
        """Your quota left today and your jobs in the queue."""
        guild_id = ctx.guild.id if ctx.guild else None
        quota = await self.bot.store.quota(guild_id, ctx.author.id)
        mine = await self.bot.store.user_jobs(ctx.author.id, active_only=True, limit=10)
        lines = [render.quota_line(quota)]
        defaults = await self.bot.store.member_settings(ctx.author.id)
        if defaults:
            lines.append(f'Your own defaults (`.settings`): {render.knobs_line(defaults)}')
        if mine:
            lines.append('Your jobs waiting or running:')
            for job in mine:
                position = await self.bot.store.position(job.id)
                where = (
                    'running'
                    if job.status is JobStatus.RUNNING
                    else f'queued, {position.ahead} ahead, {render.eta(position.eta_seconds)}'
                )
                lines.append(f'• job #{job.id} ({job.kind}): {where}')
        else:
            lines.append('You have no jobs waiting or running.')
        await ctx.send('\n'.join(lines), ephemeral=True, allowed_mentions=NO_PINGS)

    @commands.hybrid_command(name='queue')
    async def queue(self, ctx: commands.Context[EDalleBot]) -> None:
        """What the workers are doing and what waits."""
        snapshot = await self.bot.store.queue_snapshot(limit=15)
        running = [j for j in snapshot if j.status is JobStatus.RUNNING]
        queued = [j for j in snapshot if j.status is JobStatus.QUEUED]
        if not snapshot:
            text = 'The queue is empty: a new job starts right away.'
        else:
            lines = [f'{len(running)} running, {len(queued)}{"+" if len(snapshot) == 15 else ""} waiting.']
            for position, job in enumerate(snapshot, start=1):
                state = 'running' if job.status is JobStatus.RUNNING else f'#{position - len(running)} in line'
                lines.append(f'• job #{job.id} {job.kind} by <@{job.user_id}>: {state}')
            text = '\n'.join(lines)
        await ctx.send(text, allowed_mentions=NO_PINGS)

    @commands.hybrid_command(name='cancel')
    @app_commands.describe(job_id='The job number to cancel')
    async def cancel(self, ctx: commands.Context[EDalleBot], job_id: int) -> None:
        """Cancel one of your jobs (admins: anyone's)."""
        admin = await is_bot_admin(self.bot, ctx.author, ctx.guild)
        if not admin:
            await self.visible_job(ctx, job_id)  # someone else's job elsewhere looks unknown
        after = await self.bot.store.cancel(job_id, by_user_id=None if admin else ctx.author.id)  # NotJobOwner
        await ctx.send(_cancel_text(after), ephemeral=True)

    async def on_info(self, interaction: discord.Interaction, job_id: int, index: int) -> None:
        """ℹ️ under a picture: its facts and lineage, privately; anyone may look."""
        job = await self.bot.store.get(job_id)
        cog = operation_cog(self.bot, job.kind)
        details = cog.info_details(job) if cog is not None else []
        text = render.info(job, picture_of(job.result, index), details, await lineage_text(self.bot.store, job, index))
        await interaction.response.send_message(text[:1900], ephemeral=True, allowed_mentions=NO_PINGS)

    async def on_timelapse(self, interaction: discord.Interaction, job_id: int) -> None:
        """🎞️ under a result: its time-lapse posted in the channel (the requester's or an admin's click), as an animation
        under the channel's upload limit: fewer frames first, then smaller ones (`bot.utils.images.load_upload`)."""
        job = await self.bot.store.get(job_id)
        await require_owner(self.bot, interaction.user, interaction.guild, job)
        stored = media_of(job.result).get(TIMELAPSE) if job.status is JobStatus.SUCCEEDED else None
        if stored is None:
            raise NoTimelapse(f'Job #{job.id} has no time-lapse.')
        await interaction.response.defer()
        data_dir = self.bot.settings.data_dir
        await materialize(self.bot.results, data_dir, job.id)  # the worker may be on another host
        path = resolve(data_dir, job.id, stored)
        if path is None or not path.is_file():
            raise NoTimelapse(f'The time-lapse of job #{job.id} is gone.')
        limit = upload_limit(interaction.guild, self.bot.settings.max_upload_bytes)
        upload = await load_upload(path, limit, f'job-{job.id}-timelapse{path.suffix}')
        content = f'🎞️ Time-lapse of job #{job.id} · <@{job.user_id}>' + reencoded_note(upload)
        await interaction.channel.send(content, file=upload.file(), allowed_mentions=NO_PINGS)  # type: ignore[union-attr]

    async def on_cancel_button(self, interaction: discord.Interaction, job_id: int) -> None:
        """✖ on a status message cancels the job; on a finished grid it closes the controls."""
        job = await self.bot.store.get(job_id)
        admin = await require_owner(self.bot, interaction.user, interaction.guild, job)
        if job.status.is_final:
            await interaction.response.edit_message(view=None)
            return
        after = await self.bot.store.cancel(job_id, by_user_id=None if admin else interaction.user.id)
        await interaction.response.send_message(_cancel_text(after), ephemeral=True)


def _cancel_text(job: Job) -> str:
    if job.status is JobStatus.CANCELLED:
        return f'Cancelled job #{job.id}; it does not count against your quota.'
    return f'Asked the worker to stop job #{job.id}; it ends at its next step.'


async def setup(bot: EDalleBot) -> None:
    await bot.add_cog(Jobs(bot))
