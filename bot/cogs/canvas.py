"""zoom, pan and square on Discord: the "Zoom & pan…" select under every picture, `.zoom` / `.pan` and `/zoom` / `/pan`.

Three operations (`edalle.operations.zoom`, `pan`, `square`), one cog each, sharing this module because they share
one control: a select under every picture with Zoom out 1.5×, Zoom out 2×, Pan ⬅️ ➡️ ⬆️ ⬇️ and, where the picture
is not square, Make square. Its choice goes to the cog of that operation (through `dispatch`, past the guard).

The text commands start from the picture `bot.sources.TARGET_ORDER` names (one of the bot's pictures replied to,
or a member's image, which keeps its shape): `.zoom [1.5|2] [prompt]`, `.pan left|right|up|down [prompt]`. The
canvas is checked against the admins' `max_canvas_px` when the job is queued: past it the member reads the
largest allowed, and nothing is charged. The queued message says how long the run takes (a CPU estimate from the
canvas's size, `edalle.expander.cost`); progress comes with previews, as expand's does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import check_channel_permissions, prepare_prompt, request_key
from bot.operations import OperationCog
from bot.sources import Chosen, Target, channel_post, choose, find_target, slash_target, source_words, submit_from
from bot.utils.custom_ids import INDEX, JOB, Action
from bot.utils.views import dispatch
from edalle.errors import EdalleError
from edalle.jobs import Job, JobRequest
from edalle.operations import pan, square, zoom
from edalle.operations.base import Picture, picture_of

if TYPE_CHECKING:
    from bot.bot import EDalleBot

ZOOM_EMOJI = '🔭'
SQUARE_EMOJI = '⏹️'
ARROWS = {'left': '⬅️', 'right': '➡️', 'up': '⬆️', 'down': '⬇️'}
_FACTOR = re.compile(r'^(1\.5|2(\.0)?)\s*[x×]?$', re.IGNORECASE)

#: the "Zoom & pan…" select under a picture: zoom out of, pan or square picture `index` of job `job_id`
ZOOM_PAN = Action('zoompan', JOB, INDEX, owner=__name__)


class NothingToReframe(EdalleError):
    """Reply to one of my pictures, or attach an image, to zoom out of it or pan it."""

    def __init__(self) -> None:
        super().__init__(
            'There is no picture to start from: reply to one of my pictures with the command, attach an image to it, '
            'or use the Zoom & pan… menu under a picture.'
        )


class ZoomPanSelect(discord.ui.DynamicItem[discord.ui.Select], template=ZOOM_PAN.template):
    """Zoom out 1.5× / 2×, pan four ways, make square (where the picture is not square)."""

    def __init__(self, job_id: int, index: int, *, square_too: bool = True) -> None:
        options = [
            discord.SelectOption(label='Zoom out 1.5×', value='zoom 1.5', emoji=ZOOM_EMOJI),
            discord.SelectOption(label='Zoom out 2×', value='zoom 2', emoji=ZOOM_EMOJI),
            *(
                discord.SelectOption(label=f'Pan {direction}', value=f'pan {direction}', emoji=arrow)
                for direction, arrow in ARROWS.items()
            ),
        ]
        if square_too:
            options.append(discord.SelectOption(label='Make square', value='square', emoji=SQUARE_EMOJI))
        select = discord.ui.Select(custom_id=ZOOM_PAN.id(job_id, index), placeholder='Zoom & pan…', options=options)
        super().__init__(select)
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ZoomPanSelect:
        return cls(int(match['job_id']), int(match['index']))

    async def callback(self, interaction: discord.Interaction) -> None:
        choice = (self.item.values[0] if self.item.values else 'zoom 2').split()
        if choice[0] == 'zoom':
            await dispatch(interaction, 'Zoom', 'on_zoom', self.job_id, self.index, float(choice[1]))
        elif choice[0] == 'pan':
            await dispatch(interaction, 'Pan', 'on_pan', self.job_id, self.index, choice[1])
        else:
            await dispatch(interaction, 'Square', 'on_square', self.job_id, self.index)


ITEMS = (ZoomPanSelect,)


def canvas_details(job: Job, first: str) -> list[str]:
    """ℹ️ lines of a canvas job: what it did, its steps and seed, the picture's size."""
    result = job.result or {}
    settings = result.get('settings') if isinstance(result.get('settings'), dict) else {}
    lines = [first]
    steps = settings.get('steps', (job.payload or {}).get('steps'))
    if steps is not None:
        lines.append(f'Steps: {steps}')
    if result.get('seed') is not None:
        lines.append(f'Seed: {result["seed"]}')
    picture = picture_of(result, 0)
    if picture is not None:
        lines.append(f'Size: {picture.width}×{picture.height}')
    return lines


class CanvasCog(OperationCog):
    """What zoom, pan and square share: starting a job from a chosen picture with the member's limits."""

    shows_previews = True
    request_builder: ClassVar[Any]  # the operation module's `request`

    async def start(
        self,
        *,
        user: discord.abc.User,
        guild: discord.Guild | None,
        channel: discord.abc.Messageable,
        target: Target,
        prompt: str | None,
        key: str,
        fields: Mapping[str, Any],
    ) -> Chosen:
        """Checks, enqueue and status message for every way of asking (select, command). Cheap checks come before an
        attachment is downloaded; the canvas is checked against the member's limit as the job is queued."""
        check_channel_permissions(channel)
        guild_id = guild.id if guild else None
        if prompt:
            prompt, _ = await prepare_prompt(self.bot, guild_id, prompt)
        chosen = await choose(self.bot, user, guild, target, key)
        limits = await self.bot.store.get_limits(guild_id, user.id)
        request: JobRequest = type(self).request_builder(
            user_id=user.id,
            guild_id=guild_id,
            channel_id=getattr(channel, 'id', None),
            prompt=prompt,
            steps=limits.expand_steps,  # the admins' limit is also what is asked for
            max_canvas_px=limits.max_canvas_px,
            preset=self.bot.settings.preset,
            request_key=key,
            **chosen.fields(),
            **fields,
        )
        await submit_from(self.bot, chosen, request, channel_post(channel))
        return chosen

    async def start_from_interaction(self, interaction: discord.Interaction, job_id: int, index: int, **fields: Any) -> None:
        """A button or select under a picture: that very picture, its own prompt."""
        await interaction.response.defer()
        await self._start_for(interaction, Target(job_id=job_id, index=index), None, fields)

    async def start_from_text(self, ctx: commands.Context[EDalleBot], prompt: str | None, **fields: Any) -> None:
        """A text command: the picture it means (`find_target`)."""
        target = await find_target(self.bot, ctx.message, NothingToReframe)
        await self.start(
            user=ctx.author,
            guild=ctx.guild,
            channel=ctx.channel,
            target=target,
            prompt=prompt,
            key=request_key(ctx),
            fields=fields,
        )

    async def start_from_slash(
        self,
        interaction: discord.Interaction,
        options: tuple[int | None, int, discord.Attachment | None],
        prompt: str | None,
        **fields: Any,
    ) -> None:
        """A slash command: its (`job`, `picture`, `image`) options (`slash_target`)."""
        job, picture, image = options
        target = await slash_target(self.bot, interaction.user.id, job, picture, image, NothingToReframe)
        await interaction.response.defer(ephemeral=True, thinking=True)  # a download may take a moment
        await self._start_for(interaction, target, prompt, fields)

    async def _start_for(
        self, interaction: discord.Interaction, target: Target, prompt: str | None, fields: dict[str, Any]
    ) -> None:
        await self.start(
            user=interaction.user,
            guild=interaction.guild,
            channel=interaction.channel,  # type: ignore[arg-type]
            target=target,
            prompt=prompt,
            key=f'ia:{interaction.id}',
            fields=fields,
        )


class Zoom(CanvasCog):
    """Zoom out of a picture: it stays in the middle, new content all around."""

    operation = zoom.OPERATION
    request_builder = staticmethod(zoom.request)
    stages = {'zoom': 'zooming out'}

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*ITEMS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*ITEMS)

    def describe(self, job: Job) -> str:
        factor = float((job.payload or {}).get('factor') or 2.0)
        return f'{ZOOM_EMOJI} zoom out {zoom.factor_text(factor)} of {source_words(job)}'

    def picture_controls(self, job: Job, picture: Picture) -> list[discord.ui.Item[Any]]:
        """The one select every picture gets for all three operations of this module."""
        return [ZoomPanSelect(job.id, picture.index, square_too=picture.width != picture.height)]

    def picture_hint(self, job: Job, picture: Picture) -> str | None:
        return 'Zoom out, pan or make it square with the Zoom & pan… menu.'

    def info_details(self, job: Job) -> list[str]:
        factor = float((job.payload or {}).get('factor') or 2.0)
        return canvas_details(job, f'Zoomed out of {source_words(job)} by {zoom.factor_text(factor)}')

    async def on_zoom(self, interaction: discord.Interaction, job_id: int, index: int, factor: float) -> None:
        await self.start_from_interaction(interaction, job_id, index, factor=factor)

    @commands.command(name='zoom')
    async def zoom_text(
        self, ctx: commands.Context[EDalleBot], factor: str | None = None, *, prompt: str | None = None
    ) -> None:
        """Zoom out of a picture: `.zoom [1.5|2] [prompt]` (default 2×), as a reply to one of my pictures or with an
        image attached. Without a prompt, the picture's own guides the new border."""
        if factor is not None and not _FACTOR.match(factor.strip()):
            prompt, factor = f'{factor} {prompt or ""}'.strip(), None  # `.zoom a wide valley`: all prompt
        value = float(factor.strip().rstrip('xX×')) if factor else 2.0
        await self.start_from_text(ctx, prompt, factor=value)

    @app_commands.command(name='zoom')
    @app_commands.describe(
        factor='How far to zoom out (default 2×)',
        prompt='What the new border should show (default: the picture’s own prompt)',
        job='The job whose picture to zoom out of (default: your latest finished one)',
        picture='Which picture of that job, 1–9 (default 1)',
        image='An image of your own to zoom out of (PNG, JPEG or WebP); it wins over job and picture',
    )
    @app_commands.choices(factor=[app_commands.Choice(name='2×', value=2.0), app_commands.Choice(name='1.5×', value=1.5)])
    async def zoom_slash(
        self,
        interaction: discord.Interaction,
        factor: float = 2.0,
        prompt: str | None = None,
        job: int | None = None,
        picture: app_commands.Range[int, 1, 9] = 1,
        image: discord.Attachment | None = None,
    ) -> None:
        """Zoom out of one of your pictures, or an image you attach."""
        await self.start_from_slash(interaction, (job, picture, image), prompt, factor=factor)
        await interaction.edit_original_response(content=f'Zooming out {zoom.factor_text(factor)}.')


class Pan(CanvasCog):
    """Pan a picture: half its short side more on one side."""

    operation = pan.OPERATION
    request_builder = staticmethod(pan.request)
    stages = {'pan': 'panning'}

    def describe(self, job: Job) -> str:
        direction = str((job.payload or {}).get('direction'))
        return f'{ARROWS.get(direction, "")} pan {direction} of {source_words(job)}'.strip()

    def info_details(self, job: Job) -> list[str]:
        return canvas_details(job, f'Panned {source_words(job)} {(job.payload or {}).get("direction")}')

    async def on_pan(self, interaction: discord.Interaction, job_id: int, index: int, direction: str) -> None:
        await self.start_from_interaction(interaction, job_id, index, direction=direction)

    @commands.command(name='pan')
    async def pan_text(self, ctx: commands.Context[EDalleBot], direction: str = '', *, prompt: str | None = None) -> None:
        """Pan a picture: `.pan left|right|up|down [prompt]`, as a reply to one of my pictures or with an image
        attached. Without a prompt, the picture's own guides the new side."""
        direction = direction.strip().lower()
        if direction not in pan.DIRECTIONS:
            raise NothingToPan(direction)
        await self.start_from_text(ctx, prompt, direction=direction)

    @app_commands.command(name='pan')
    @app_commands.describe(
        direction='Which side gets new content',
        prompt='What the new side should show (default: the picture’s own prompt)',
        job='The job whose picture to pan (default: your latest finished one)',
        picture='Which picture of that job, 1–9 (default 1)',
        image='An image of your own to pan (PNG, JPEG or WebP); it wins over job and picture',
    )
    @app_commands.choices(direction=[app_commands.Choice(name=d, value=d) for d in pan.DIRECTIONS])
    async def pan_slash(
        self,
        interaction: discord.Interaction,
        direction: str,
        prompt: str | None = None,
        job: int | None = None,
        picture: app_commands.Range[int, 1, 9] = 1,
        image: discord.Attachment | None = None,
    ) -> None:
        """Pan one of your pictures, or an image you attach, to one side."""
        await self.start_from_slash(interaction, (job, picture, image), prompt, direction=direction)
        await interaction.edit_original_response(content=f'Panning {direction}.')


class NothingToPan(EdalleError):
    """Say which way to pan: `.pan left`, `.pan right`, `.pan up` or `.pan down`."""

    def __init__(self, direction: str) -> None:
        said = 'That is not a direction. ' if direction else ''
        super().__init__(f'{said}Say which way to pan: `.pan left`, `.pan right`, `.pan up` or `.pan down`, then a prompt.')


class Square(CanvasCog):
    """Make a widened picture square again."""

    operation = square.OPERATION
    request_builder = staticmethod(square.request)
    stages = {'square': 'making it square'}

    def describe(self, job: Job) -> str:
        return f'{SQUARE_EMOJI} make square of {source_words(job)}'

    def info_details(self, job: Job) -> list[str]:
        return canvas_details(job, f'Made {source_words(job)} square')

    async def on_square(self, interaction: discord.Interaction, job_id: int, index: int) -> None:
        await self.start_from_interaction(interaction, job_id, index)


async def setup(bot: EDalleBot) -> None:
    for cog in (Zoom(bot), Pan(bot), Square(bot)):
        await bot.add_cog(cog)
