"""upscale's Discord side: ⏫ Upscale ×4 under every picture, `.upscale` as a reply to one of the bot's pictures
(or with an image attached), and `/upscale`.

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

from bot.admission import check_channel_permissions, request_key
from bot.operations import OperationCog
from bot.sources import Chosen, Target, channel_post, choose, find_target, slash_target, source_words, submit_from
from bot.utils.custom_ids import INDEX, JOB, Action
from bot.utils.views import dispatch
from edalle.errors import EdalleError
from edalle.jobs import Job
from edalle.operations import upscale
from edalle.operations.base import Picture, picture_of
from edalle.upscale import SCALE, upscale_installed

if TYPE_CHECKING:
    from bot.bot import EDalleBot

UPSCALE_EMOJI = '⏫'

#: ⏫ under a picture: upscale picture `index` of job `job_id`
UPSCALE = Action('upscale', JOB, INDEX, owner=__name__)


class NotInstalled(EdalleError):
    """Upscaling is not installed here."""


class NothingToUpscale(EdalleError):
    """Reply to one of my pictures, or attach an image, to upscale it."""

    def __init__(self) -> None:
        super().__init__(
            'There is nothing to upscale: reply to one of my pictures (a picked candidate, a grid or a widened picture) '
            'with `.upscale`, attach an image to it, or use `/upscale`.'
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
        return f'{UPSCALE_EMOJI} upscale ×{SCALE} of {source_words(job)}'

    def picture_controls(self, job: Job, picture: Picture) -> list[discord.ui.Item[Any]]:
        if not self.installed or job.kind == self.operation.name:  # an upscale's result is already large
            return []
        return [UpscaleButton(job.id, picture.index)]

    def info_details(self, job: Job) -> list[str]:
        picture = picture_of(job.result, 0)
        size = (job.result or {}).get('source_size') or [(job.payload or {}).get('width'), (job.payload or {}).get('height')]
        if picture is None:
            return [f'Upscale ×{SCALE} of {source_words(job)} ({size[0]}×{size[1]})']
        return [f'Upscaled {source_words(job)} from {size[0]}×{size[1]} to {picture.width}×{picture.height}']

    # -- starting one -----------------------------------------------------------------------------------------

    async def start_upscale(
        self,
        *,
        user: discord.abc.User,
        guild: discord.Guild | None,
        channel: discord.abc.Messageable,
        target: Target,
        key: str,
    ) -> Chosen:
        """Checks, enqueue and status message for every way of asking (button, command); a member's image is kept
        at its own size (the admins' `upscale_max_pixels` caps it at admission)."""
        if not self.installed:
            raise NotInstalled(upscale.NOT_INSTALLED)
        check_channel_permissions(channel)
        chosen = await choose(self.bot, user, guild, target, key, fit='size')
        request = upscale.request(
            user_id=user.id,
            guild_id=guild.id if guild else None,
            channel_id=getattr(channel, 'id', None),
            preset=self.bot.settings.preset,
            request_key=key,
            **chosen.fields(),
        )
        await submit_from(self.bot, chosen, request, channel_post(channel))
        return chosen

    async def on_upscale(self, interaction: discord.Interaction, job_id: int, index: int) -> None:
        await interaction.response.defer()
        await self.start_upscale(
            user=interaction.user,
            guild=interaction.guild,
            channel=interaction.channel,  # type: ignore[arg-type]
            target=Target(job_id=job_id, index=index),
            key=f'ia:{interaction.id}',
        )

    # -- the commands -----------------------------------------------------------------------------------------

    @commands.command(name='upscale')
    async def upscale_text(self, ctx: commands.Context[EDalleBot]) -> None:
        """Upscale a picture ×4: reply `.upscale` to one of my pictures (a grid means its best candidate), or attach
        an image (PNG, JPEG or WebP; it is upscaled at its own size)."""
        if not self.installed:
            raise NotInstalled(upscale.NOT_INSTALLED)
        target = await find_target(self.bot, ctx.message, NothingToUpscale)
        await self.start_upscale(user=ctx.author, guild=ctx.guild, channel=ctx.channel, target=target, key=request_key(ctx))

    @app_commands.command(name='upscale')
    @app_commands.describe(
        job='The job whose picture to upscale (default: your latest finished one)',
        picture='Which picture of that job, 1–9 (default 1, the best)',
        image='Or your own picture (PNG, JPEG or WebP), upscaled at its own size',
    )
    async def upscale_slash(
        self,
        interaction: discord.Interaction,
        job: int | None = None,
        picture: app_commands.Range[int, 1, 9] = 1,
        image: discord.Attachment | None = None,
    ) -> None:
        """Upscale one of your pictures ×4, or an image you attach."""
        if not self.installed:
            raise NotInstalled(upscale.NOT_INSTALLED)
        target = await slash_target(self.bot, interaction.user.id, job, picture, image, NothingToUpscale)
        await interaction.response.defer(ephemeral=True, thinking=True)
        found = await self.start_upscale(
            user=interaction.user,
            guild=interaction.guild,
            channel=interaction.channel,  # type: ignore[arg-type]
            target=target,
            key=f'ia:{interaction.id}',
        )
        what = f'job #{target.job_id}, picture {picture}' if target.job_id is not None else 'your image'
        size = f'{found.width * SCALE}×{found.height * SCALE}'
        await interaction.edit_original_response(content=f'Upscaling {what} to {size}.')


async def setup(bot: EDalleBot) -> None:
    await bot.add_cog(Upscale(bot))
