"""repaint's Discord side, both methods behind one command: 🖌 Repaint under a picture, `.repaint` as a reply, `/repaint`.

- 🖌 sends the member a private copy of the picture with its cell grid drawn on it (A1–D4 on a 256×256
  picture; wider ones have more columns, taller ones more rows), a select of the cells, then a form for
  the prompt and the method. Grids of more than 25 cells (Discord's limit for a select) get a form with the
  cells typed instead.
- `.repaint B2:C3 a party hat [--method tokens|clip]` as a reply to one of the bot's pictures (a grid means
  its best); ranges like `B2:C3`, lists like `A1,B1`. `/repaint` takes `region`, `prompt`, `method`, `job`,
  `picture`.

Two operations, two cogs in this module: `Repaint` (the `repaint` operation, by tokens: fast, a sampling job
counted with the imagines) holds the commands and components; `RepaintClip` (`repaint_clip`, the E-DALL-E
method: CLIP-guided latents, counted with the edits) renders its jobs. The method defaults to tokens on a
256×256 picture and to CLIP on any other size (tokens need the 16×16 grid of a 256×256 picture).
"""

from __future__ import annotations

import asyncio
import io
import re
import string
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import check_channel_permissions, prepare_prompt, request_key
from bot.operations import NoSuchPicture, OperationCog, operation_cog
from bot.sources import Target, channel_post, choose, find_target, slash_target, source_words, submit_from
from bot.utils import render, results
from bot.utils.cell_grid import cell_names, overlay_png
from bot.utils.checks import require_owner
from bot.utils.custom_ids import INDEX, JOB, Action
from bot.utils.results import picture_path
from bot.utils.views import dispatch, make_view
from edalle.errors import EdalleError
from edalle.expander.canvas import MAX_CANVAS_PX
from edalle.expander.regions import RegionError, parse_region
from edalle.jobs import Job, JobStatus
from edalle.operations import repaint, repaint_clip
from edalle.operations.base import PICTURE_SIDE, Picture, picture_of

if TYPE_CHECKING:
    from bot.bot import EDalleBot

BRUSH = '🖌️'
METHODS = ('tokens', 'clip')
MAX_SELECT_OPTIONS = 25  # Discord's limit for a select's options
MODAL_PREFIX = 'ed-repaint'  # a form's custom_id: not a component, so not an `Action`
_REGION_AT_START = re.compile(r'^\s*((?:[A-Za-z]\d{1,2}(?:\s*[:\-–]\s*[A-Za-z]\d{1,2})?(?:\s*[,;]\s*|\s+|$))+)(.*)$', re.S)
_METHOD_FLAG = re.compile(r'(?:^|\s)--method[\s=]+(\S+)', re.IGNORECASE)

#: 🖌 under a picture: open the private cell chooser for picture `index` of job `job_id`
REPAINT = Action('repaint', JOB, INDEX, owner=__name__)
#: the cell select in the private chooser
CELLS = Action('cells', JOB, INDEX, owner=__name__)
#: the chooser of a grid too large for a select: a form with the cells typed
TYPE_CELLS = Action('cellstext', JOB, INDEX, owner=__name__)


class NothingToRepaint(EdalleError):
    """Reply to one of my pictures to repaint part of it."""

    def __init__(self) -> None:
        super().__init__(
            'There is nothing to repaint: reply to one of my pictures with `.repaint B2:C3 what it should show` '
            '(cells A1–D4 on a 256×256 picture), or press 🖌 under it, attach an image, or use `/repaint`.'
        )


class BadRegion(EdalleError):
    """Those cells cannot be repainted."""


class NoPrompt(EdalleError):
    """Say what the cells should show."""


class RepaintButton(discord.ui.DynamicItem[discord.ui.Button], template=REPAINT.template):
    """🖌 Repaint under a picture."""

    def __init__(self, job_id: int, index: int) -> None:
        button = discord.ui.Button(
            label='Repaint', emoji=BRUSH, style=discord.ButtonStyle.secondary, custom_id=REPAINT.id(job_id, index)
        )
        super().__init__(button)
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RepaintButton:
        return cls(int(match['job_id']), int(match['index']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Repaint', 'on_open', self.job_id, self.index)


class CellSelect(discord.ui.DynamicItem[discord.ui.Select], template=CELLS.template):
    """The cells to repaint, any number of them, in the private chooser."""

    def __init__(self, job_id: int, index: int, names: list[str]) -> None:
        select = discord.ui.Select(
            custom_id=CELLS.id(job_id, index),
            placeholder='Cells to repaint…',
            min_values=1,
            max_values=max(1, len(names) - 1),  # every cell would keep nothing: a dream, not a repaint
            options=[discord.SelectOption(label=name, value=name) for name in names],
        )
        super().__init__(select)
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> CellSelect:
        names = [option.value for option in getattr(item, 'options', [])]
        return cls(int(match['job_id']), int(match['index']), names)

    async def callback(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Repaint', 'on_cells', self.job_id, self.index, list(self.item.values))


class TypeCellsButton(discord.ui.DynamicItem[discord.ui.Button], template=TYPE_CELLS.template):
    """In the chooser of a grid of more than 25 cells: a form where the cells are typed."""

    def __init__(self, job_id: int, index: int) -> None:
        button = discord.ui.Button(
            label='Type the cells…', emoji=BRUSH, style=discord.ButtonStyle.primary, custom_id=TYPE_CELLS.id(job_id, index)
        )
        super().__init__(button)
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> TypeCellsButton:
        return cls(int(match['job_id']), int(match['index']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Repaint', 'on_type_cells', self.job_id, self.index)


ITEMS = (RepaintButton, CellSelect, TypeCellsButton)


class RepaintForm(discord.ui.Modal, title='Repaint'):
    """The prompt (and the cells, when they were not chosen in the select) and the method.

    Its custom_id carries the state (`ed-repaint:<job>:<index>:<cells as a hex bit mask>`, or `-` where the
    cells are typed); discord.py keeps the open form in memory and hands its submit to `on_submit`.
    """

    def __init__(self, job_id: int, index: int, region: str | None, mask: str, methods: tuple[str, ...]) -> None:
        super().__init__(custom_id=f'{MODAL_PREFIX}:{job_id}:{index}:{mask if region else "-"}', timeout=15 * 60)
        self.job_id, self.index, self.region = job_id, index, region
        self.cells: discord.ui.TextInput[RepaintForm] | None = None
        if region is None:
            self.cells = discord.ui.TextInput(custom_id='cells', placeholder='B2:C3 or A1,B1', max_length=200)
            self.add_item(discord.ui.Label(text='Cells to repaint', component=self.cells))
        self.prompt = discord.ui.TextInput(
            custom_id='prompt',
            placeholder='what the cells should show, e.g. a party hat',
            style=discord.TextStyle.paragraph,
            max_length=repaint.MAX_PROMPT_CHARS,
        )
        self.add_item(discord.ui.Label(text=f'Repaint {region}' if region else 'Prompt', component=self.prompt))
        self.method = discord.ui.Select(
            custom_id='method',
            options=[
                discord.SelectOption(label=METHOD_LABELS[name], value=name, default=position == 0)
                for position, name in enumerate(methods)
            ],
        )
        self.add_item(discord.ui.Label(text='Method', component=self.method))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        region = self.region if self.region is not None else (self.cells.value if self.cells is not None else '')
        method = self.method.values[0] if self.method.values else None
        await dispatch(interaction, 'Repaint', 'on_form', self.job_id, self.index, region, self.prompt.value, method)


METHOD_LABELS = {
    'tokens': 'tokens: fast, redraws the cells’ tokens',
    'clip': 'clip: slower, CLIP-guided (E-DALL-E)',
}


def region_of(names: list[str]) -> str:
    """Chosen cell names as a region: a filled rectangle as its corners ('B2:C3', or 'B2'), else a sorted list."""
    cells = sorted({(int(name[1:]) - 1, string.ascii_uppercase.index(name[0].upper())) for name in names})
    rows = [row for row, _ in cells]
    columns = [column for _, column in cells]
    top, bottom, left, right = min(rows), max(rows), min(columns), max(columns)
    corner = f'{string.ascii_uppercase[left]}{top + 1}'
    if len(cells) == (bottom - top + 1) * (right - left + 1):
        return corner if len(cells) == 1 else f'{corner}:{string.ascii_uppercase[right]}{bottom + 1}'
    return ','.join(f'{string.ascii_uppercase[column]}{row + 1}' for row, column in cells)


def mask_hex(names: list[str], all_names: list[str]) -> str:
    """Chosen cells as a bit mask over the grid's cells (row by row), in hex: compact enough for any custom_id."""
    chosen = set(names)
    return format(sum(1 << position for position, name in enumerate(all_names) if name in chosen), 'x')


def methods_for(picture: Picture) -> tuple[str, ...]:
    """The methods that can repaint this picture, the default first: tokens need a 256×256 picture."""
    return METHODS if (picture.width, picture.height) == (PICTURE_SIDE, PICTURE_SIDE) else ('clip',)


def repaintable(picture: Picture) -> bool:
    """Any picture within the expander's canvas limit (an upscaled one is far beyond it)."""
    return max(picture.width, picture.height) <= MAX_CANVAS_PX


def split_words(words: str) -> tuple[str, str, str | None]:
    """`.repaint`'s words → (region, prompt, method): `B2:C3 a party hat --method clip`, `A1, B1 a red boat`."""
    method = None
    flag = _METHOD_FLAG.search(words)
    if flag is not None:
        method = flag.group(1).lower()
        words = (words[: flag.start()] + ' ' + words[flag.end() :]).strip()
    found = _REGION_AT_START.match(words)
    if found is None:
        raise BadRegion(
            'Start with the cells to repaint, then what they should show: `.repaint B2:C3 a party hat` '
            '(columns A–D, rows 1–4 on a 256×256 picture).'
        )
    region = re.sub(r'\s*[,;]\s*|\s+', ',', found.group(1).strip()).strip(',')
    region = re.sub(r',?([:\-–]),?', r'\1', region)
    return region, found.group(2).strip(), method


def region_label(job: Job) -> str:
    return str((job.result or {}).get('region') or (job.payload or {}).get('region') or '')


class Repaint(OperationCog):
    """Repaint cells of a picture by tokens (and hold the command for both methods)."""

    operation = repaint.OPERATION
    stages = {'encode': 'reading the prompt', 'sample': 'drawing', 'decode': 'decoding', 'rank': 'choosing the best'}

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*ITEMS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*ITEMS)

    # -- how its jobs read ------------------------------------------------------------------------------------

    def describe(self, job: Job) -> str:
        return f'{BRUSH} repaint {region_label(job)} of {source_words(job)}: {render.quoted(results.prompt_of(job))}'

    def picture_caption(self, job: Job, picture: Picture) -> str:
        return f'repaint {region_label(job)} of {source_words(job)} (job #{job.id})'

    def picture_controls(self, job: Job, picture: Picture) -> list[discord.ui.Item[Any]]:
        return [RepaintButton(job.id, picture.index)] if repaintable(picture) else []

    def picture_hint(self, job: Job, picture: Picture) -> str | None:
        if not repaintable(picture):
            return None
        return f'{BRUSH} Repaint redraws the cells you choose (or reply `.repaint B2:C3 what they should show`).'

    def info_details(self, job: Job) -> list[str]:
        result = job.result or {}
        samples = result.get('samples') or []
        lines = [f'Repainted {result.get("cells") or region_label(job)} of {source_words(job)} by tokens']
        if samples:
            weight = result.get('likelihood_weight', repaint.LIKELIHOOD_WEIGHT)
            lines.append(
                f'Best of {len(samples)} samples: CLIP score + {weight:g} × mean log-likelihood of the kept tokens after '
                f'the region ({samples[0]["clip"]:.2f} + {weight:g} × {samples[0]["likelihood"]:.3f})'
            )
        if result.get('seed') is not None:
            lines.append(f'Seed: {result["seed"]}')
        return lines

    # -- starting one -----------------------------------------------------------------------------------------

    async def start_repaint(
        self,
        *,
        user: discord.abc.User,
        guild: discord.Guild | None,
        channel: discord.abc.Messageable,
        target: Target,
        region: str,
        prompt: str,
        method: str | None,
        key: str,
    ) -> str:
        """Checks, enqueue and status message for every way of asking (the form, the commands); returns the method.
        A member's image is repainted by tokens in its centre 256×256 square, or by CLIP (`--method clip`) in its own
        shape, as `.expand` keeps it."""
        if method is not None and method not in METHODS:
            raise BadRegion(f'Repaint by `tokens` (fast) or by `clip` (slower, CLIP-guided), not `{method}`.')
        check_channel_permissions(channel)
        if not prompt.strip():
            raise NoPrompt(repaint.NO_PROMPT)
        prompt, _ = await prepare_prompt(self.bot, guild.id if guild else None, prompt)
        chosen = await choose(self.bot, user, guild, target, key, fit='shape' if method == 'clip' else 'square')
        square = (chosen.width, chosen.height) == (PICTURE_SIDE, PICTURE_SIDE)
        method = method or ('tokens' if square else 'clip')
        common = dict(
            user_id=user.id,
            guild_id=guild.id if guild else None,
            channel_id=getattr(channel, 'id', None),
            region=region,
            prompt=prompt,
            preset=self.bot.settings.preset,
            request_key=key,
            **chosen.fields(),
        )
        if method == 'tokens':
            request = repaint.request(**common)
        else:
            limits = await self.bot.store.get_limits(guild.id if guild else None, user.id)
            request = repaint_clip.request(**common, steps=limits.expand_steps)  # the admins' limit is what is asked for
        await submit_from(self.bot, chosen, request, channel_post(channel))
        return method

    async def owned_picture(self, interaction: discord.Interaction, job_id: int, index: int) -> tuple[Job, Picture]:
        job = await self.bot.store.get(job_id)
        await require_owner(self.bot, interaction.user, interaction.guild, job)
        picture = picture_of(job.result, index) if job.status is JobStatus.SUCCEEDED else None
        if picture is None or not repaintable(picture):
            raise NoSuchPicture(f'Job #{job.id} has no picture {index + 1} I can repaint.')
        return job, picture

    # -- components and the form ------------------------------------------------------------------------------

    async def on_open(self, interaction: discord.Interaction, job_id: int, index: int) -> None:
        """🖌: a private copy of the picture with its grid, and the cell select (or a button to type them)."""
        job, picture = await self.owned_picture(interaction, job_id, index)
        cog = operation_cog(self.bot, job.kind)
        if cog is not None:
            await cog.fetch_files(job)
        path = picture_path(self.bot.settings.data_dir, job, picture)
        png = await asyncio.to_thread(_overlay_of, path)
        names = cell_names((picture.width, picture.height))
        if len(names) <= MAX_SELECT_OPTIONS:
            view, how = make_view(CellSelect(job_id, index, names)), 'choose the cells to redraw below'
        else:
            view, how = make_view(TypeCellsButton(job_id, index)), 'type the cells to redraw (e.g. B2:C3 or A1,B1)'
        last = names[-1]
        text = (
            f'{BRUSH} Repaint picture {index + 1} of job #{job_id}: {how} (columns A–{last[0]}, rows 1–{last[1:]}; '
            'each cell is 64×64 px), then say what they should show.\n'
            'Or reply to the picture with `.repaint B2:C3 a party hat` (add `--method clip` for the slower CLIP method).'
        )
        file = discord.File(io.BytesIO(png), filename=f'job-{job_id}-{index + 1}-cells.png')
        await interaction.response.send_message(text, file=file, view=view, ephemeral=True)

    async def on_cells(self, interaction: discord.Interaction, job_id: int, index: int, names: list[str]) -> None:
        """Cells chosen: the form for the prompt and the method."""
        _, picture = await self.owned_picture(interaction, job_id, index)
        region = region_of(names)
        try:
            parse_region(region, (picture.height // 16, picture.width // 16))
        except RegionError as exc:
            raise BadRegion(str(exc)) from None
        mask = mask_hex(names, cell_names((picture.width, picture.height)))
        await interaction.response.send_modal(RepaintForm(job_id, index, region, mask, methods_for(picture)))

    async def on_type_cells(self, interaction: discord.Interaction, job_id: int, index: int) -> None:
        _, picture = await self.owned_picture(interaction, job_id, index)
        await interaction.response.send_modal(RepaintForm(job_id, index, None, '', methods_for(picture)))

    async def on_form(
        self, interaction: discord.Interaction, job_id: int, index: int, region: str, prompt: str, method: str | None
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        used = await self.start_repaint(
            user=interaction.user,
            guild=interaction.guild,
            channel=interaction.channel,  # type: ignore[arg-type]
            target=Target(job_id=job_id, index=index),
            region=region,
            prompt=prompt,
            method=method,
            key=f'ia:{interaction.id}',
        )
        await interaction.edit_original_response(
            content=f'Repainting {region} of job #{job_id}, picture {index + 1} ({used}).'
        )

    # -- the commands -----------------------------------------------------------------------------------------

    @commands.command(name='repaint')
    async def repaint_text(self, ctx: commands.Context[EDalleBot], *, words: str = '') -> None:
        """Repaint cells of one of my pictures: reply `.repaint B2:C3 what they should show [--method tokens|clip]`.

        Cells: columns A–D and rows 1–4 on a 256×256 picture (each 64×64 px; wider pictures have more columns);
        a range `B2:C3` or a list `A1,B1`. tokens (the default on 256×256 pictures) is fast; clip is slower and
        works on any size. Or press 🖌 under the picture to choose the cells on it.
        """
        region, prompt, method = split_words(words)
        target = await find_target(self.bot, ctx.message, NothingToRepaint)
        await self.start_repaint(
            user=ctx.author,
            guild=ctx.guild,
            channel=ctx.channel,
            target=target,
            region=region,
            prompt=prompt,
            method=method,
            key=request_key(ctx),
        )

    @app_commands.command(name='repaint')
    @app_commands.choices(method=[app_commands.Choice(name=METHOD_LABELS[m], value=m) for m in METHODS])
    @app_commands.describe(
        region='Cells to redraw: columns A–D, rows 1–4 on a 256×256 picture, e.g. B2:C3 or A1,B1',
        prompt='What the cells should show, e.g. "a party hat"',
        method='tokens (fast, 256×256 pictures) or clip (slower, any size); default: tokens where it can',
        job='The job whose picture to repaint (default: your latest finished one)',
        picture='Which picture of that job, 1–9 (default 1, the best)',
        image='Or your own picture (by tokens: its centre square; by clip: its own shape)',
    )
    async def repaint_slash(
        self,
        interaction: discord.Interaction,
        region: str,
        prompt: str,
        method: app_commands.Choice[str] | None = None,
        job: int | None = None,
        picture: app_commands.Range[int, 1, 9] = 1,
        image: discord.Attachment | None = None,
    ) -> None:
        """Redraw cells of one of your pictures, or of an image you attach, under a new prompt."""
        target = await slash_target(self.bot, interaction.user.id, job, picture, image, NothingToRepaint, repaintable)
        await interaction.response.defer(ephemeral=True, thinking=True)
        used = await self.start_repaint(
            user=interaction.user,
            guild=interaction.guild,
            channel=interaction.channel,  # type: ignore[arg-type]
            target=target,
            region=region,
            prompt=prompt,
            method=method.value if method is not None else None,
            key=f'ia:{interaction.id}',
        )
        what = f'job #{target.job_id}, picture {picture}' if target.job_id is not None else 'your image'
        await interaction.edit_original_response(content=f'Repainting {region.strip().upper()} of {what} ({used}).')


class RepaintClip(OperationCog):
    """Repaint cells of a picture with CLIP guidance (E-DALL-E); its jobs start from `Repaint`'s command."""

    operation = repaint_clip.OPERATION
    shows_previews = True
    stages = {'repaint': 'repainting'}

    def describe(self, job: Job) -> str:
        return f'{BRUSH} repaint {region_label(job)} (CLIP) of {source_words(job)}: {render.quoted(results.prompt_of(job))}'

    def picture_caption(self, job: Job, picture: Picture) -> str:
        return f'repaint {region_label(job)} of {source_words(job)} (job #{job.id})'

    def info_details(self, job: Job) -> list[str]:
        result, payload = job.result or {}, job.payload or {}
        settings = result.get('settings') if isinstance(result.get('settings'), dict) else {}
        lines = [f'Repainted {region_label(job)} of {source_words(job)} with CLIP guidance (E-DALL-E)']
        steps = settings.get('steps', payload.get('steps'))
        if steps is not None:
            lines.append(f'Steps: {steps}, starting from {settings.get("init", payload.get("init") or "edit")}')
        if result.get('seed') is not None:
            lines.append(f'Seed: {result["seed"]}')
        return lines


def _overlay_of(path: Any) -> bytes:
    from PIL import Image

    with Image.open(path) as image:
        return overlay_png(image.convert('RGB'))


async def setup(bot: EDalleBot) -> None:
    await bot.add_cog(Repaint(bot))
    await bot.add_cog(RepaintClip(bot))
