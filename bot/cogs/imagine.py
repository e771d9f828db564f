"""`.imagine` / `/imagine`, and what happens on the grid: pick (button or 1️⃣…9️⃣ reaction), 🔄 reroll.

The command is parse, check, one `enqueue`, reply (`bot.admission`). The grid's buttons and reactions
read the job from the store by the id in the component or on the message, so they work on any old
grid after any number of restarts.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import check_channel_permissions, clean_imagine_prompt, fit_imagine, imagine_request, submit
from bot.errors import EdalleError, user_message
from bot.utils import render, results
from bot.utils.checks import require_owner
from bot.utils.custom_ids import message_target
from bot.utils.images import load_upload, upload_limit
from bot.utils.views import NUMBER_EMOJI, candidate_view
from edalle.errors import JobNotFound
from edalle.jobs import IMAGINE, Job, JobStatus
from edalle.jobs.result_store import materialize

if TYPE_CHECKING:
    from bot.bot import EDalleBot

log = logging.getLogger(__name__)


class NoSuchCandidate(EdalleError):
    """That candidate does not exist."""


def request_key(ctx: commands.Context[EDalleBot]) -> str:
    """One job per Discord message or interaction, however often Discord (or a retry) delivers it."""
    return f'ia:{ctx.interaction.id}' if ctx.interaction else f'msg:{ctx.message.id}'


class Imagine(commands.Cog):
    """Draw candidates for a prompt and pick one."""

    def __init__(self, bot: EDalleBot) -> None:
        self.bot = bot

    @commands.hybrid_command(name='imagine')
    @app_commands.describe(prompt='What to draw, e.g. "a lighthouse in a storm, oil painting"')
    async def imagine(self, ctx: commands.Context[EDalleBot], *, prompt: str) -> None:
        """Draw nine candidates for a prompt, ranked best-first by CLIP; pick one to expand it."""
        check_channel_permissions(ctx.channel)
        guild_id = ctx.guild.id if ctx.guild else None
        text, cut = clean_imagine_prompt(self.bot, prompt)
        request = imagine_request(
            self.bot,
            user_id=ctx.author.id,
            guild_id=guild_id,
            channel_id=ctx.channel.id,
            prompt=text,
            request_key=request_key(ctx),
        )

        async def post(content: str, view: discord.ui.View) -> discord.Message:
            return await ctx.reply(content, view=view, mention_author=False)

        await submit(self.bot, request, post, cut=cut, fit=fit_imagine)

    # -- the grid ---------------------------------------------------------------------------------------------

    async def load_imagine(self, job_id: int) -> Job:
        job = await self.bot.store.get(job_id)
        if job.kind != IMAGINE:
            raise JobNotFound(job_id)
        return job

    async def post_candidate(self, channel: discord.abc.Messageable, job: Job, index: int, *, nonce: str) -> discord.Message:
        """Candidate `index` at 256×256 with the expand controls, as a channel message (DM if refused)."""
        if job.status is JobStatus.SUCCEEDED:  # made on another host, maybe: fetched through the result store
            await materialize(self.bot.results, self.bot.settings.data_dir, job.id)
        info = results.candidate(job, index, self.bot.settings.data_dir)
        if job.status is not JobStatus.SUCCEEDED or info is None:
            raise NoSuchCandidate(f'Job #{job.id} has no candidate {index + 1} (yet).')
        guild = getattr(channel, 'guild', None)
        upload = await load_upload(
            info.path, upload_limit(guild, self.bot.settings.max_upload_bytes), f'job-{job.id}-{index + 1}.png'
        )
        content, view = render.candidate(job, info), candidate_view(job.id, index)
        try:
            return await channel.send(content, file=upload.file(), view=view, nonce=nonce)
        except discord.Forbidden:
            user = self.bot.get_user(job.user_id) or await self.bot.fetch_user(job.user_id)
            return await user.send(content, file=upload.file(), view=view)

    async def on_pick(self, interaction: discord.Interaction, job_id: int, index: int) -> None:
        await interaction.response.defer()
        job = await self.load_imagine(job_id)
        await require_owner(self.bot, interaction.user, interaction.guild, job)
        await self.post_candidate(interaction.channel, job, index, nonce=f'pick{interaction.id}')  # type: ignore[arg-type]

    async def on_reroll(self, interaction: discord.Interaction, job_id: int) -> None:
        """Same prompt, new seed: a new job (it counts against the quota like any imagine)."""
        await interaction.response.defer()
        job = await self.load_imagine(job_id)
        await require_owner(self.bot, interaction.user, interaction.guild, job)
        channel = interaction.channel
        check_channel_permissions(channel)
        text, _ = clean_imagine_prompt(self.bot, results.prompt_of(job))
        request = imagine_request(
            self.bot,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            prompt=text,
            request_key=f'ia:{interaction.id}',
        )

        async def post(content: str, view: discord.ui.View) -> discord.Message:
            return await channel.send(content, view=view)  # type: ignore[union-attr]

        await submit(self.bot, request, post, fit=fit_imagine)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """1️⃣…9️⃣ on a grid picks that candidate; raw, so it works on grids older than the message cache."""
        emoji = str(payload.emoji)
        if emoji not in NUMBER_EMOJI or self.bot.user is None or payload.user_id == self.bot.user.id:
            return
        channel = self.bot.get_channel(payload.channel_id) or self.bot.get_partial_messageable(
            payload.channel_id, guild_id=payload.guild_id
        )
        try:
            message = await channel.fetch_message(payload.message_id)
        except discord.HTTPException:
            return
        target = message_target(
            [getattr(c, 'custom_id', '') for row in message.components for c in getattr(row, 'children', [])]
        )
        if message.author.id != self.bot.user.id or target is None or target[0] != 'grid':
            return
        user = payload.member or self.bot.get_user(payload.user_id) or await self.bot.fetch_user(payload.user_id)
        guild = self.bot.get_guild(payload.guild_id) if payload.guild_id else None
        try:
            job = await self.load_imagine(target[1])
            try:
                await require_owner(self.bot, user, guild, job)
            except EdalleError:
                return  # someone else's grid: reactions are votes, not requests
            await self.post_candidate(
                channel, job, NUMBER_EMOJI.index(emoji), nonce=f'react{payload.message_id % 10**9}{emoji[0]}'
            )
        except Exception as exc:
            text = user_message(exc, context=f'reaction {emoji} by user {payload.user_id} on message {payload.message_id}')
            await send_note(channel, user, text)


async def send_note(channel: discord.abc.Messageable, user: discord.abc.User, text: str) -> None:
    """A reaction has no interaction to answer privately: mention the member in the channel, briefly."""
    try:
        await channel.send(f'{user.mention} {text}', delete_after=60, allowed_mentions=discord.AllowedMentions(users=[user]))
    except discord.HTTPException:
        pass


async def setup(bot: EDalleBot) -> None:
    await bot.add_cog(Imagine(bot))
