"""expand's Discord side: `.expand` / `/expand`, the ratio buttons and select under a picture, ↔️ reactions.

An expand widens a picture of a finished job, or a picture of the member's own. The member says which by
clicking under a picture, reacting ↔️ on it, replying `.expand [ratio] [prompt]` to one of the bot's
pictures (a grid means its best candidate), attaching an image to `.expand` (or the `image` option of
`/expand`), or replying `.expand` to any message with an image attached.

Which picture, when a command could mean several: `bot.sources.TARGET_ORDER`; a
widened picture is widened again, as it is. Typed ratios are checked against the expander's geometry, and an
uploaded picture against the expander's own file limits (`bot.uploads`), before anything is stored or
queued; an upload keeps its shape. Every picture gets the ratio controls: the expander widens any picture
whose result fits the admins' `max_canvas_px` (a refusal names the largest allowed, and charges nothing).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import check_channel_permissions, prepare_prompt, request_key
from bot.errors import EdalleError, NothingToExpand, send_note, user_message
from bot.operations import OperationCog, components_of
from bot.sources import Chosen, Target, channel_post, choose, find_target, slash_target, submit_from
from bot.utils import render
from bot.utils.checks import require_owner
from bot.utils.custom_ids import INDEX, JOB, RATIO, Action, picture_target
from bot.utils.ratios import OTHER_RATIOS, TALL, WIDE, check_ratio
from bot.utils.views import dispatch
from edalle.jobs import Job
from edalle.operations import expand
from edalle.operations.base import Picture, picture_of

if TYPE_CHECKING:
    from bot.bot import EDalleBot

log = logging.getLogger(__name__)

WIDE_EMOJI = '↔️'
TALL_EMOJI = '↕️'
_LOOKS_LIKE_RATIO = re.compile(r'^\d+(\.\d+)?\s*[:x×/]\s*\d+(\.\d+)?$', re.IGNORECASE)
#: /expand's ratio option: the buttons' two ratios, then the select's (Discord offers only these)
RATIO_CHOICES = [
    app_commands.Choice(name=f'{width}:{height} {label}', value=f'{width}:{height}')
    for width, height, label in ((*WIDE, 'wide'), (*TALL, 'tall'), *OTHER_RATIOS)
]

#: a ratio button under a picture: expand picture `index` of job `job_id`
EXPAND = Action('expand', JOB, INDEX, RATIO, owner=__name__)
#: the select of other ratios under a picture (the chosen value is `W:H`)
RATIOS = Action('ratios', JOB, INDEX, owner=__name__)


class ExpandButton(discord.ui.DynamicItem[discord.ui.Button], template=EXPAND.template):
    """Widen picture `index` of job `job_id` to width:height."""

    def __init__(self, job_id: int, index: int, width: int, height: int) -> None:
        button = discord.ui.Button(
            label=f'{width}:{height}',
            emoji=WIDE_EMOJI if width > height else TALL_EMOJI,
            style=discord.ButtonStyle.primary,
            custom_id=EXPAND.id(job_id, index, f'{width}x{height}'),
            row=0,
        )
        super().__init__(button)
        self.job_id, self.index, self.ratio = job_id, index, (width, height)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ExpandButton:
        return cls(int(match['job_id']), int(match['index']), int(match['width']), int(match['height']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Expand', 'on_expand', self.job_id, self.index, f'{self.ratio[0]}:{self.ratio[1]}')


class RatioSelect(discord.ui.DynamicItem[discord.ui.Select], template=RATIOS.template):
    """The other ratios under a picture; choosing one starts the expand."""

    def __init__(self, job_id: int, index: int) -> None:
        select = discord.ui.Select(
            custom_id=RATIOS.id(job_id, index),
            placeholder='Expand to another ratio…',
            options=[
                discord.SelectOption(label=f'{w}:{h}', value=f'{w}:{h}', description=description)
                for w, h, description in OTHER_RATIOS
            ],
            row=1,
        )
        super().__init__(select)
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RatioSelect:
        return cls(int(match['job_id']), int(match['index']))

    async def callback(self, interaction: discord.Interaction) -> None:
        ratio = self.item.values[0] if self.item.values else f'{WIDE[0]}:{WIDE[1]}'
        await dispatch(interaction, 'Expand', 'on_expand', self.job_id, self.index, ratio)


ITEMS = (ExpandButton, RatioSelect)


def source_of(job: Job) -> str:
    """What an expand widens: a picture of a job, or the member's own picture (by its file name)."""
    if job.parent_job_id is not None:
        return f'job #{job.parent_job_id}, candidate {(job.parent_index or 0) + 1}'
    name = (job.payload or {}).get('source_name')
    return f'your image {render.quoted(str(name), 80)}' if name else 'your image'


class Expand(OperationCog):
    """Widen a picture to another aspect ratio (E-DALL-E)."""

    operation = expand.OPERATION
    shows_previews = True
    stages = {'expand': 'expanding'}

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*ITEMS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*ITEMS)

    # -- how its jobs read ------------------------------------------------------------------------------------

    def describe(self, job: Job) -> str:
        ratio = (job.payload or {}).get('ratio', '16:9')
        return f'↔️ expand to {ratio} of {source_of(job)}'

    def picture_controls(self, job: Job, picture: Picture) -> list[discord.ui.Item[Any]]:
        return [
            ExpandButton(job.id, picture.index, *WIDE),
            ExpandButton(job.id, picture.index, *TALL),
            RatioSelect(job.id, picture.index),
        ]

    def picture_hint(self, job: Job, picture: Picture) -> str | None:
        return 'Expand it with ↔️ 16:9, ↕️ 9:16 or another ratio below (or react ↔️).'

    def info_details(self, job: Job) -> list[str]:
        result, payload = job.result or {}, job.payload or {}
        settings = result.get('settings') if isinstance(result.get('settings'), dict) else {}
        picture = picture_of(result, 0)
        lines = [f'Expanded {source_of(job)} to {payload.get("ratio")}']
        steps = settings.get('steps', payload.get('steps'))
        if steps is not None:
            lines.append(f'Steps: {steps}')
        if picture is not None:
            lines.append(f'Width: {picture.width}')
            lines.append(f'Height: {picture.height}')
        return lines

    # -- starting one -----------------------------------------------------------------------------------------

    async def start_expand(
        self,
        *,
        user: discord.abc.User,
        guild: discord.Guild | None,
        channel: discord.abc.Messageable,
        target: Target,
        ratio: str,
        prompt: str | None,
        key: str,
    ) -> Chosen:
        """Checks, enqueue and status message for every way of asking (button, select, reaction, command). Cheap
        checks come before an attachment is downloaded; returns the source (an upload: as stored)."""
        width, height = check_ratio(ratio)
        check_channel_permissions(channel)
        if prompt:
            prompt, _ = await prepare_prompt(self.bot, guild.id if guild else None, prompt)
        chosen = await choose(self.bot, user, guild, target, key)
        limits = await self.bot.store.get_limits(guild.id if guild else None, user.id)
        request = expand.request(
            user_id=user.id,
            guild_id=guild.id if guild else None,
            channel_id=getattr(channel, 'id', None),
            ratio=f'{width}:{height}',
            prompt=prompt,
            steps=limits.expand_steps,  # the admins' limit is also what is asked for
            preset=self.bot.settings.preset,
            request_key=key,
            **chosen.fields(),
        )
        await submit_from(self.bot, chosen, request, channel_post(channel))
        return chosen

    # -- components -------------------------------------------------------------------------------------------

    async def on_expand(self, interaction: discord.Interaction, job_id: int, index: int, ratio: str) -> None:
        await interaction.response.defer()
        await self.start_expand(
            user=interaction.user,
            guild=interaction.guild,
            channel=interaction.channel,  # type: ignore[arg-type]
            target=Target(job_id=job_id, index=index),
            ratio=ratio,
            prompt=None,
            key=f'ia:{interaction.id}',
        )

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """↔️ on a picture it can widen starts a 16:9 expand (once per member and picture)."""
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
        target = picture_target(components_of(message))
        if message.author.id != self.bot.user.id or target is None:
            return
        user = payload.member or self.bot.get_user(payload.user_id) or await self.bot.fetch_user(payload.user_id)
        guild = self.bot.get_guild(payload.guild_id) if payload.guild_id else None
        try:
            parent = await self.bot.store.get(target[0])
            if picture_of(parent.result, target[1]) is None:
                return
            if user.id != parent.user_id:
                await require_owner(self.bot, user, guild, parent)
        except EdalleError:
            return  # someone else's picture: a reaction, not a request
        try:
            await self.start_expand(
                user=user,
                guild=guild,
                channel=channel,
                target=Target(job_id=target[0], index=target[1]),
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
        image keeps its shape; without a prompt, the picture alone guides the new sides.
        """
        if ratio is not None and not _LOOKS_LIKE_RATIO.match(ratio.strip()):
            prompt, ratio = f'{ratio} {prompt or ""}'.strip(), None  # `.expand a beach at dusk`: all prompt
        ratio = ratio or f'{WIDE[0]}:{WIDE[1]}'
        check_ratio(ratio)  # a bad ratio is the first thing to hear about
        target = await find_target(self.bot, ctx.message, NothingToExpand)
        key = request_key(ctx)
        await self.start_expand(
            user=ctx.author, guild=ctx.guild, channel=ctx.channel, target=target, ratio=ratio, prompt=prompt, key=key
        )

    @app_commands.command(name='expand')
    @app_commands.choices(ratio=RATIO_CHOICES)
    @app_commands.describe(
        ratio='Target aspect ratio (default 16:9, wide)',
        prompt='What the new sides should show (default: the original prompt)',
        job='The job whose picture to expand (default: your latest finished one)',
        candidate='Which picture of that job, 1–9 (default 1, the best)',
        image='An image of your own to expand (PNG, JPEG or WebP); it wins over job and candidate',
    )
    async def expand_slash(
        self,
        interaction: discord.Interaction,
        ratio: app_commands.Choice[str] | None = None,
        prompt: str | None = None,
        job: int | None = None,
        candidate: app_commands.Range[int, 1, 9] = 1,
        image: discord.Attachment | None = None,
    ) -> None:
        """Widen one of your pictures, or an image you attach, to another aspect ratio."""
        ratio_text = ratio.value if ratio is not None else f'{WIDE[0]}:{WIDE[1]}'
        check_ratio(ratio_text)
        target = await slash_target(self.bot, interaction.user.id, job, candidate, image, NothingToExpand)
        await interaction.response.defer(ephemeral=True, thinking=True)  # a download may take a moment
        chosen = await self.start_expand(
            user=interaction.user,
            guild=interaction.guild,
            channel=interaction.channel,  # type: ignore[arg-type]
            target=target,
            ratio=ratio_text,
            prompt=prompt,
            key=f'ia:{interaction.id}',
        )
        name = (chosen.upload_name or 'your image').replace('`', '')
        what = f'`{name}`' if image is not None else f'job #{target.job_id}, candidate {candidate},'
        await interaction.edit_original_response(content=f'Expanding {what} to {ratio_text}.')


async def setup(bot: EDalleBot) -> None:
    await bot.add_cog(Expand(bot))
