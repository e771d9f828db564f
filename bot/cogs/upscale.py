"""upscale's Discord side: ⏫ Upscale ×4 under every picture, `.upscale` as a reply to one of the bot's pictures,
and `/upscale`.

The result is sent as PNG when it fits the channel's upload limit, otherwise re-encoded (a high-quality
JPEG or WebP, `edalle.media.encode_to_fit` through `bot.utils.images`) with a note. Without the upscale
weights (`edalle models download --preset upscale`) the button is not shown and the commands say how to
install them; the admins' `upscale_max_pixels` caps the input, checked before queueing.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import check_channel_permissions, request_key, submit
from bot.operations import OperationCog, components_of, picture_in, replied_message
from bot.utils.checks import require_owner
from bot.utils.custom_ids import INDEX, JOB, Action
from bot.utils.views import dispatch
from edalle.errors import EdalleError
from edalle.jobs import Job, JobStatus
from edalle.operations import upscale
from edalle.operations.base import Picture, picture_of, pictures_of
from edalle.upscale import SCALE, upscale_installed

if TYPE_CHECKING:
    from bot.bot import EDalleBot

UPSCALE_EMOJI = '⏫'

#: ⏫ under a picture: upscale picture `index` of job `job_id`
UPSCALE = Action('upscale', JOB, INDEX, owner=__name__)


class NotInstalled(EdalleError):
    """Upscaling is not installed here."""


class NothingToUpscale(EdalleError):
    """Reply to one of my pictures to upscale it."""

    def __init__(self) -> None:
        super().__init__(
            'There is nothing to upscale: reply to one of my pictures (a picked candidate, a grid or a widened picture) '
            'with `.upscale`, or use `/upscale`.'
        )


class UpscaleButton(discord.ui.DynamicItem[discord.ui.Button], template=UPSCALE.template):
    """⏫ Upscale ×4 under a picture."""

    def __init__(self, job_id: int, index: int) -> None:
        button = discord.ui.Button(
            label=f'Upscale ×{SCALE}',
            emoji=UPSCALE_EMOJI,
            style=discord.ButtonStyle.secondary,
            custom_id=UPSCALE.id(job_id, index),
        )
        super().__init__(button)
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> UpscaleButton:
        return cls(int(match['job_id']), int(match['index']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Upscale', 'on_upscale', self.job_id, self.index)


ITEMS = (UpscaleButton,)


def source_of(job: Job) -> str:
    if job.parent_job_id is not None:
        return f'job #{job.parent_job_id}, picture {(job.parent_index or 0) + 1}'
    return 'your image'


class Upscale(OperationCog):
    """Upscale a picture ×4."""

    operation = upscale.OPERATION
    stages = {'upscale': 'upscaling'}

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*ITEMS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*ITEMS)

    @property
    def installed(self) -> bool:
        return upscale_installed(self.bot.settings.data_dir, self.bot.settings.preset)

    # -- how its jobs read ------------------------------------------------------------------------------------

    def describe(self, job: Job) -> str:
        return f'{UPSCALE_EMOJI} upscale ×{SCALE} of {source_of(job)}'

    def picture_controls(self, job: Job, picture: Picture) -> list[discord.ui.Item[Any]]:
        if not self.installed or job.kind == self.operation.name:  # an upscale's result is already large
            return []
        return [UpscaleButton(job.id, picture.index)]

    def info_details(self, job: Job) -> list[str]:
        picture = picture_of(job.result, 0)
        size = (job.result or {}).get('source_size') or [(job.payload or {}).get('width'), (job.payload or {}).get('height')]
        if picture is None:
            return [f'Upscale ×{SCALE} of {source_of(job)} ({size[0]}×{size[1]})']
        return [f'Upscaled {source_of(job)} from {size[0]}×{size[1]} to {picture.width}×{picture.height}']

    # -- starting one -----------------------------------------------------------------------------------------

    async def start_upscale(
        self,
        *,
        user: discord.abc.User,
        guild: discord.Guild | None,
        channel: discord.abc.Messageable,
        job_id: int,
        index: int,
        key: str,
    ) -> Picture:
        """Checks, enqueue and status message for every way of asking (button, command)."""
        if not self.installed:
            raise NotInstalled(upscale.NOT_INSTALLED)
        parent = await self.bot.store.get(job_id)
        admin = await require_owner(self.bot, user, guild, parent)
        check_channel_permissions(channel)
        picture = picture_of(parent.result, index) if parent.status is JobStatus.SUCCEEDED else None
        if picture is None:
            raise NothingToUpscale()
        request = upscale.request(
            user_id=user.id,
            guild_id=guild.id if guild else None,
            channel_id=getattr(channel, 'id', None),
            parent_job_id=job_id,
            parent_index=index,
            width=picture.width,
            height=picture.height,
            preset=self.bot.settings.preset,
            request_key=key,
            admin=admin,
        )

        async def post(content: str, view: discord.ui.View) -> discord.Message:
            return await channel.send(content, view=view)

        await submit(self.bot, request, post)
        return picture

    async def on_upscale(self, interaction: discord.Interaction, job_id: int, index: int) -> None:
        await interaction.response.defer()
        await self.start_upscale(
            user=interaction.user,
            guild=interaction.guild,
            channel=interaction.channel,  # type: ignore[arg-type]
            job_id=job_id,
            index=index,
            key=f'ia:{interaction.id}',
        )

    # -- the commands -----------------------------------------------------------------------------------------

    @commands.command(name='upscale')
    async def upscale_text(self, ctx: commands.Context[EDalleBot]) -> None:
        """Upscale one of my pictures ×4: reply `.upscale` to it (a grid means its best candidate)."""
        if not self.installed:
            raise NotInstalled(upscale.NOT_INSTALLED)
        referenced = await replied_message(self.bot, ctx.message)
        is_ours = referenced is not None and self.bot.user is not None and referenced.author.id == self.bot.user.id
        target = picture_in(components_of(referenced)) if is_ours and referenced is not None else None
        if target is None:
            raise NothingToUpscale()
        await self.start_upscale(
            user=ctx.author, guild=ctx.guild, channel=ctx.channel, job_id=target[0], index=target[1], key=request_key(ctx)
        )

    @app_commands.command(name='upscale')
    @app_commands.describe(
        job='The job whose picture to upscale (default: your latest finished one)',
        picture='Which picture of that job, 1–9 (default 1, the best)',
    )
    async def upscale_slash(
        self, interaction: discord.Interaction, job: int | None = None, picture: app_commands.Range[int, 1, 9] = 1
    ) -> None:
        """Upscale one of your pictures ×4."""
        if not self.installed:
            raise NotInstalled(upscale.NOT_INSTALLED)
        if job is None:
            mine = await self.bot.store.user_jobs(interaction.user.id, active_only=False, limit=20)
            finished = [j for j in mine if j.status is JobStatus.SUCCEEDED and pictures_of(j.result)]
            if not finished:
                raise NothingToUpscale()
            job = finished[0].id
        await interaction.response.defer(ephemeral=True, thinking=True)
        found = await self.start_upscale(
            user=interaction.user,
            guild=interaction.guild,
            channel=interaction.channel,  # type: ignore[arg-type]
            job_id=job,
            index=picture - 1,
            key=f'ia:{interaction.id}',
        )
        size = f'{found.width * SCALE}×{found.height * SCALE}'
        await interaction.edit_original_response(content=f'Upscaling job #{job}, picture {picture}, to {size}.')


async def setup(bot: EDalleBot) -> None:
    await bot.add_cog(Upscale(bot))
