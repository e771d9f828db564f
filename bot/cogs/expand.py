"""expand's Discord side: `.expand` / `/expand`, the ratio buttons and select under a picture, ↔️ reactions.

An expand widens a picture of a finished job, or a picture of the member's own. The member says which by
clicking under a picture, reacting ↔️ on it, replying `.expand [ratio] [prompt]` to one of the bot's
pictures (a grid means its best candidate), attaching an image to `.expand` (or the `image` option of
`/expand`), or replying `.expand` to any message with an image attached.

Which picture, when a command could mean several (`TARGET_ORDER`, also in the help text): an image
attached to the command itself wins, since attaching it is the most explicit thing a member can do; then
the replied-to message: one of the bot's pictures means that picture (a widened picture means its source
again), any other message means its first image attachment. Typed ratios are checked against the
expander's geometry, and an uploaded picture against the expander's own file limits (`bot.uploads`),
before anything is stored or queued. The expander widens 256×256 pictures, so those are the ones that get
the ratio controls.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import check_channel_permissions, prepare_prompt, request_key, submit
from bot.errors import EdalleError, NothingToExpand, send_note, user_message
from bot.operations import OperationCog, components_of, picture_in, replied_message
from bot.uploads import discard_upload, store_upload
from bot.utils import render
from bot.utils.checks import require_owner
from bot.utils.custom_ids import INDEX, JOB, RATIO, Action, picture_target
from bot.utils.images import looks_like_image
from bot.utils.ratios import OTHER_RATIOS, TALL, WIDE, check_ratio
from bot.utils.views import dispatch
from edalle.jobs import Job, JobStatus
from edalle.operations import expand
from edalle.operations.base import PICTURE_SIDE, Picture, picture_of, pictures_of

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

TARGET_ORDER = (
    'Which picture: an image attached to the command wins; otherwise the message you reply to '
    '(one of my pictures, or any message with an image attached).'
)


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


@dataclass(frozen=True)
class Target:
    """What a command widens: a picture (`job_id`, `index`), a new attachment, or an earlier upload again."""

    job_id: int | None = None
    index: int = 0
    attachment: discord.Attachment | None = None
    upload: Job | None = None  # an expand of an uploaded picture: widen its stored source again


def source_of(job: Job) -> str:
    """What an expand widens: a picture of a job, or the member's own picture (by its file name)."""
    if job.parent_job_id is not None:
        return f'job #{job.parent_job_id}, candidate {(job.parent_index or 0) + 1}'
    name = (job.payload or {}).get('source_name')
    return f'your image {render.quoted(str(name), 80)}' if name else 'your image'


def accepts(picture: Picture) -> bool:
    """The expander widens a 256×256 picture (a square of 16×16 tokens)."""
    return (picture.width, picture.height) == (PICTURE_SIDE, PICTURE_SIDE)


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
        if not accepts(picture):
            return []
        return [
            ExpandButton(job.id, picture.index, *WIDE),
            ExpandButton(job.id, picture.index, *TALL),
            RatioSelect(job.id, picture.index),
        ]

    def picture_hint(self, job: Job, picture: Picture) -> str | None:
        return 'Expand it with ↔️ 16:9, ↕️ 9:16 or another ratio below (or react ↔️).' if accepts(picture) else None

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
        job_id: int,
        index: int,
        ratio: str,
        prompt: str | None,
        key: str,
    ) -> None:
        """Checks, enqueue and status message for every way of asking (button, select, reaction, command)."""
        width, height = check_ratio(ratio)
        parent = await self.bot.store.get(job_id)
        admin = await require_owner(self.bot, user, guild, parent)
        check_channel_permissions(channel)
        if prompt:
            prompt, _ = await prepare_prompt(self.bot, guild.id if guild else None, prompt)
        limits = await self.bot.store.get_limits(guild.id if guild else None, user.id)
        request = expand.request(
            user_id=user.id,
            guild_id=guild.id if guild else None,
            channel_id=getattr(channel, 'id', None),
            parent_job_id=job_id,
            parent_index=index,
            ratio=f'{width}:{height}',
            prompt=prompt,
            steps=limits.expand_steps,  # the admins' limit is also what is asked for
            preset=self.bot.settings.preset,
            request_key=key,
            admin=admin,
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
        limits = await self.bot.store.get_limits(guild.id if guild else None, user.id)
        request = expand.request(
            user_id=user.id,
            guild_id=guild.id if guild else None,
            channel_id=getattr(channel, 'id', None),
            source_path=path,
            source_name=name,
            ratio=f'{width}:{height}',
            prompt=prompt,
            steps=limits.expand_steps,
            preset=self.bot.settings.preset,
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
            picture = picture_of(parent.result, target[1])
            if picture is None or not accepts(picture):
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
                job_id=target[0],
                index=target[1],
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
    @app_commands.choices(ratio=RATIO_CHOICES)
    @app_commands.describe(
        ratio='Target aspect ratio (default 16:9, wide)',
        prompt='What the new sides should show (default: the original prompt)',
        job='The job whose picture to expand (default: your latest one with a 256×256 picture)',
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
        target = ratio.value if ratio is not None else f'{WIDE[0]}:{WIDE[1]}'
        check_ratio(target)
        if image is not None:
            await interaction.response.defer(ephemeral=True, thinking=True)  # the download may take a moment
            name = await self.start_upload_expand(
                user=interaction.user,
                guild=interaction.guild,
                channel=interaction.channel,  # type: ignore[arg-type]
                ratio=target,
                prompt=prompt,
                key=f'ia:{interaction.id}',
                attachment=image,
            )
            await interaction.edit_original_response(content=f'Expanding `{name.replace("`", "")}` to {target}.')
            return
        if job is None:
            mine = await self.bot.store.user_jobs(interaction.user.id, active_only=False, limit=20)
            finished = [
                j for j in mine if j.status is JobStatus.SUCCEEDED and any(accepts(p) for p in pictures_of(j.result))
            ]
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
            ratio=target,
            prompt=prompt,
            key=f'ia:{interaction.id}',
        )
        await interaction.edit_original_response(content=f'Expanding job #{job}, candidate {candidate}, to {target}.')

    async def find_target(self, ctx: commands.Context[EDalleBot]) -> Target:
        """The picture a text command means, in `TARGET_ORDER`; a grid means its best candidate."""
        attached = _first_image(ctx.message.attachments)
        if attached is not None:
            return Target(attachment=attached)
        referenced = await replied_message(self.bot, ctx.message)
        if referenced is None:
            raise NothingToExpand()
        if self.bot.user is not None and referenced.author.id == self.bot.user.id:
            found = await self._bot_picture(components_of(referenced))
            if found is not None:
                return found
        attached = _first_image(referenced.attachments)
        if attached is not None:
            return Target(attachment=attached)
        raise NothingToExpand()

    async def _bot_picture(self, ids: list[str]) -> Target | None:
        """The picture behind one of the bot's messages (`picture_in`). A widened picture means its source again: a
        picture or an upload."""
        target = picture_in(ids)
        if target is None:
            return None
        job = await self.bot.store.get(target[0])
        if job.kind == self.operation.name and job.parent_job_id is not None:
            return Target(job_id=job.parent_job_id, index=job.parent_index or 0)
        if job.kind == self.operation.name and (job.payload or {}).get('source_path'):
            return Target(upload=job)
        return Target(job_id=target[0], index=target[1])


def _first_image(attachments: list[discord.Attachment]) -> discord.Attachment | None:
    """The first attachment that looks like an image, else the first one at all: a text file is then refused
    with the checker's words (what to send instead) rather than a vague "nothing to expand"."""
    if not attachments:
        return None
    return next((a for a in attachments if looks_like_image(a)), attachments[0])


async def setup(bot: EDalleBot) -> None:
    await bot.add_cog(Expand(bot))
