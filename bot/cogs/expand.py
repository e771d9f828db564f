"""`.expand` / `/expand`, the ratio buttons and select under a picked candidate, ↔️ reactions, and ℹ️.

An expand widens candidate *i* of a finished imagine job, or a picture of the member's own. The member
says which by clicking under the picked candidate, reacting ↔️ on it, replying `.expand [ratio] [prompt]`
to one of the bot's pictures (a grid means its best candidate), attaching an image to `.expand` (or the
`image` option of `/expand`), or replying `.expand` to any message with an image attached.

Which picture, when a command could mean several (`TARGET_ORDER`, also in the help text): an image
attached to the command itself wins, since attaching it is the most explicit thing a member can do; then
the replied-to message: one of the bot's pictures means that candidate (a widened picture means its
source again), any other message means its first image attachment. Typed ratios are checked against the
expander's geometry, and an uploaded picture against the expander's own file limits (`bot.uploads`),
before anything is stored or queued.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import check_channel_permissions, expand_request, expand_upload_request, prepare_prompt, submit
from bot.cogs.imagine import request_key, send_note
from bot.errors import EdalleError, NothingToExpand, user_message
from bot.uploads import discard_upload, store_upload
from bot.utils import render, results
from bot.utils.checks import require_owner
from bot.utils.custom_ids import message_target, parse
from bot.utils.images import looks_like_image
from bot.utils.ratios import WIDE, check_ratio
from bot.utils.views import WIDE_EMOJI
from edalle.errors import JobNotFound
from edalle.jobs import EXPAND, IMAGINE, Job, JobStatus

if TYPE_CHECKING:
    from bot.bot import EDalleBot

log = logging.getLogger(__name__)

_LOOKS_LIKE_RATIO = re.compile(r'^\d+(\.\d+)?\s*[:x×/]\s*\d+(\.\d+)?$', re.IGNORECASE)


TARGET_ORDER = (
    'Which picture: an image attached to the command wins; otherwise the message you reply to '
    '(one of my pictures, or any message with an image attached).'
)


@dataclass(frozen=True)
class Target:
    """What a command widens: a candidate (`job_id`, `index`), a new attachment, or an earlier upload again."""

    job_id: int | None = None
    index: int = 0
    attachment: discord.Attachment | None = None
    upload: Job | None = None  # an expand of an uploaded picture: widen its stored source again


def components_of(message: discord.Message) -> list[str]:
    return [getattr(c, 'custom_id', None) or '' for row in message.components for c in getattr(row, 'children', [])]


class Expand(commands.Cog):
    """Widen a picked candidate to another aspect ratio (E-DALL-E)."""

    def __init__(self, bot: EDalleBot) -> None:
        self.bot = bot

    async def start_expand(
        self,
        *,
        user: discord.abc.User,
        guild: discord.Guild | None,
        channel: discord.abc.Messageable,
        job_id: int,
        index: int,
        ratio: str,
        prompt: str | None,
        key: str,
        post_first: bool = False,
    ) -> None:
        """Checks, enqueue and status message for every way of asking (button, select, reaction, command)."""
        width, height = check_ratio(ratio)
        parent = await self.bot.store.get(job_id)
        if parent.kind != IMAGINE:
            raise JobNotFound(job_id)
        await require_owner(self.bot, user, guild, parent)
        check_channel_permissions(channel)
        if prompt:
            prompt, _ = await prepare_prompt(self.bot, guild.id if guild else None, prompt)
        request = await expand_request(
            self.bot,
            user_id=user.id,
            guild_id=guild.id if guild else None,
            channel_id=getattr(channel, 'id', None),
            parent_job_id=job_id,
            parent_index=index,
            ratio=f'{width}:{height}',
            prompt=prompt,
            request_key=key,
        )

        async def post(content: str, view: discord.ui.View) -> discord.Message:
            return await channel.send(content, view=view)

        await submit(self.bot, request, post)

    async def start_upload_expand(
        self,
        *,
        user: discord.abc.User,
        guild: discord.Guild | None,
        channel: discord.abc.Messageable,
        ratio: str,
        prompt: str | None,
        key: str,
        attachment: discord.Attachment | None = None,
        upload: Job | None = None,
    ) -> str:
        """Expand a member's picture: a new `attachment` (downloaded, checked, stored), or the stored source of
        an earlier `upload` expand. Cheap checks come before the download; returns the picture's name."""
        width, height = check_ratio(ratio)
        if upload is not None:
            await require_owner(self.bot, user, guild, upload)
        check_channel_permissions(channel)
        if prompt:
            prompt, _ = await prepare_prompt(self.bot, guild.id if guild else None, prompt)
        if upload is not None:
            path, name = upload.payload['source_path'], upload.payload.get('source_name')
            stored = False
        else:
            assert attachment is not None
            path, name = await store_upload(self.bot, attachment, key)
            stored = True
        request = await expand_upload_request(
            self.bot,
            user_id=user.id,
            guild_id=guild.id if guild else None,
            channel_id=getattr(channel, 'id', None),
            source_path=path,
            source_name=name,
            ratio=f'{width}:{height}',
            prompt=prompt,
            request_key=key,
        )

        async def post(content: str, view: discord.ui.View) -> discord.Message:
            return await channel.send(content, view=view)

        try:
            await submit(self.bot, request, post)
        except EdalleError:
            if stored:  # refused (quota, cooldown, ban…): keep nothing of it
                await discard_upload(self.bot, path)
            raise
        return name or 'your image'

    # -- components -------------------------------------------------------------------------------------------

    async def on_expand(self, interaction: discord.Interaction, job_id: int, index: int, ratio: str) -> None:
        await interaction.response.defer()
        await self.start_expand(
            user=interaction.user,
            guild=interaction.guild,
            channel=interaction.channel,  # type: ignore[arg-type]
            job_id=job_id,
            index=index,
            ratio=ratio,
            prompt=None,
            key=f'ia:{interaction.id}',
        )

    async def on_info(self, interaction: discord.Interaction, job_id: int, index: int) -> None:
        """Anyone may read a picture's facts (privately)."""
        job = await self.bot.store.get(job_id)
        info = results.candidate(job, index, self.bot.settings.data_dir) if job.kind == IMAGINE else None
        await interaction.response.send_message(render.info(job, info), ephemeral=True)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """↔️ on a picked candidate starts a 16:9 expand (once per member and picture)."""
        if str(payload.emoji) not in (WIDE_EMOJI, WIDE_EMOJI.rstrip('\ufe0f')) or self.bot.user is None:
            return
        if payload.user_id == self.bot.user.id:
            return
        channel = self.bot.get_channel(payload.channel_id) or self.bot.get_partial_messageable(
            payload.channel_id, guild_id=payload.guild_id
        )
        try:
            message = await channel.fetch_message(payload.message_id)
        except discord.HTTPException:
            return
        target = message_target(components_of(message))
        if message.author.id != self.bot.user.id or target is None or target[0] != 'candidate':
            return
        user = payload.member or self.bot.get_user(payload.user_id) or await self.bot.fetch_user(payload.user_id)
        guild = self.bot.get_guild(payload.guild_id) if payload.guild_id else None
        try:
            parent = await self.bot.store.get(target[1])
            if user.id != parent.user_id:
                await require_owner(self.bot, user, guild, parent)
        except EdalleError:
            return  # someone else's picture: a reaction, not a request
        try:
            await self.start_expand(
                user=user,
                guild=guild,
                channel=channel,
                job_id=target[1],
                index=target[2] or 0,
                ratio=f'{WIDE[0]}:{WIDE[1]}',
                prompt=None,
                key=f'react:{payload.message_id}:{payload.user_id}:16x9',
            )
        except Exception as exc:
            await send_note(channel, user, user_message(exc, context=f'↔️ by user {payload.user_id} on {payload.message_id}'))

    # -- the command ------------------------------------------------------------------------------------------

    @commands.command(name='expand')
    async def expand_text(
        self, ctx: commands.Context[EDalleBot], ratio: str | None = None, *, prompt: str | None = None
    ) -> None:
        """Widen a picture to another ratio: `.expand [ratio] [prompt]` (ratio default 16:9).

        Reply to one of my pictures, attach an image (PNG, JPEG or WebP, up to 25 MB and 40 MP), or reply
        to a message with an image attached. An attached image wins over the message you reply to. Your
        image is centre-cropped to a square first; without a prompt, the picture alone guides the new sides.
        """
        if ratio is not None and not _LOOKS_LIKE_RATIO.match(ratio.strip()):
            prompt, ratio = f'{ratio} {prompt or ""}'.strip(), None  # `.expand a beach at dusk`: all prompt
        ratio = ratio or f'{WIDE[0]}:{WIDE[1]}'
        check_ratio(ratio)  # a bad ratio is the first thing to hear about
        target = await self.find_target(ctx)
        if target.job_id is None:
            await self.start_upload_expand(
                user=ctx.author,
                guild=ctx.guild,
                channel=ctx.channel,
                ratio=ratio,
                prompt=prompt,
                key=request_key(ctx),
                attachment=target.attachment,
                upload=target.upload,
            )
            return
        await self.start_expand(
            user=ctx.author,
            guild=ctx.guild,
            channel=ctx.channel,
            job_id=target.job_id,
            index=target.index,
            ratio=ratio,
            prompt=prompt,
            key=request_key(ctx),
        )

    @app_commands.command(name='expand')
    @app_commands.describe(
        ratio='Target aspect ratio, e.g. 16:9, 9:16, 21:9, 4:3 (default 16:9)',
        prompt='What the new sides should show (default: the original prompt)',
        job='The imagine job to expand (default: your latest one)',
        candidate='Which candidate of that job, 1–9 (default 1, the best)',
        image='An image of your own to expand (PNG, JPEG or WebP); it wins over job and candidate',
    )
    async def expand_slash(
        self,
        interaction: discord.Interaction,
        ratio: str = '16:9',
        prompt: str | None = None,
        job: int | None = None,
        candidate: app_commands.Range[int, 1, 9] = 1,
        image: discord.Attachment | None = None,
    ) -> None:
        """Widen one of your pictures, or an image you attach, to another aspect ratio."""
        check_ratio(ratio)
        if image is not None:
            await interaction.response.defer(ephemeral=True, thinking=True)  # the download may take a moment
            name = await self.start_upload_expand(
                user=interaction.user,
                guild=interaction.guild,
                channel=interaction.channel,  # type: ignore[arg-type]
                ratio=ratio,
                prompt=prompt,
                key=f'ia:{interaction.id}',
                attachment=image,
            )
            await interaction.edit_original_response(content=f'Expanding `{name.replace("`", "")}` to {ratio}.')
            return
        if job is None:
            mine = await self.bot.store.user_jobs(interaction.user.id, active_only=False, limit=20)
            finished = [j for j in mine if j.kind == IMAGINE and j.status is JobStatus.SUCCEEDED]
            if not finished:
                raise NothingToExpand()
            job = finished[0].id
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.start_expand(
            user=interaction.user,
            guild=interaction.guild,
            channel=interaction.channel,  # type: ignore[arg-type]
            job_id=job,
            index=candidate - 1,
            ratio=ratio,
            prompt=prompt,
            key=f'ia:{interaction.id}',
        )
        await interaction.edit_original_response(content=f'Expanding job #{job}, candidate {candidate}, to {ratio}.')

    async def find_target(self, ctx: commands.Context[EDalleBot]) -> Target:
        """The picture a text command means, in `TARGET_ORDER`; a grid means its best candidate."""
        attached = _first_image(ctx.message.attachments)
        if attached is not None:
            return Target(attachment=attached)
        reference = ctx.message.reference
        referenced = None
        if reference is not None and reference.message_id is not None:
            referenced = reference.resolved if isinstance(reference.resolved, discord.Message) else None
            if referenced is None:
                try:
                    referenced = await ctx.channel.fetch_message(reference.message_id)
                except discord.HTTPException:
                    referenced = None
        if referenced is None:
            raise NothingToExpand()
        if self.bot.user is not None and referenced.author.id == self.bot.user.id:
            target = message_target(components_of(referenced))
            if target is not None:
                return Target(job_id=target[1], index=target[2] or 0)
            found = await self._expand_result_source(referenced)
            if found is not None:
                return found
        attached = _first_image(referenced.attachments)
        if attached is not None:
            return Target(attachment=attached)
        raise NothingToExpand()

    async def _expand_result_source(self, message: discord.Message) -> Target | None:
        """A widened picture carries only ℹ️ (`ed:info:<expand job>:0`): expand its source (candidate or upload) again."""
        for custom_id in components_of(message):
            parsed = parse(custom_id)
            if parsed and parsed[0] == 'info':
                job: Job = await self.bot.store.get(int(parsed[1]['job_id']))
                if job.kind == EXPAND and job.parent_job_id is not None:
                    return Target(job_id=job.parent_job_id, index=job.parent_index or 0)
                if job.kind == EXPAND and (job.payload or {}).get('source_path'):
                    return Target(upload=job)
        return None


def _first_image(attachments: list[discord.Attachment]) -> discord.Attachment | None:
    """The first attachment that looks like an image, else the first one at all: a text file is then refused
    with the checker's words (what to send instead) rather than a vague "nothing to expand"."""
    if not attachments:
        return None
    return next((a for a in attachments if looks_like_image(a)), attachments[0])


async def setup(bot: EDalleBot) -> None:
    await bot.add_cog(Expand(bot))
