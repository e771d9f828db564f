"""dream on Discord: `.dream <prompt> [flags]`, `/dream`, and 🎨 Dream under every picture (refine that picture).

`.dream a lighthouse in a storm --ar 16:9 --steps 50 --seed 7 --no text, watermark --init grey` dreams from the
prompt alone (the flags are read by `bot.utils.flags`: an unknown one is named, never drawn). Sent as a reply to
one of the bot's pictures, or with an image attached, it refines that picture towards the prompt instead (its
shape is kept, so `--ar` and `--init` do not apply). 🎨 under a picture does the same with the picture's own
prompt. Steps default to the admins' `expand_steps` and may not pass it; the canvas may not pass
`max_canvas_px`: a refusal names the largest allowed and charges nothing. The queued message says how long the
run takes (a CPU estimate); progress comes with previews; the result has 🎞️ for its time-lapse.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import check_channel_permissions, prepare_prompt, request_key
from bot.errors import BadRatio
from bot.operations import OperationCog
from bot.sources import Chosen, Target, channel_post, choose, job_picture, optional_target, source_words, submit_from
from bot.utils import render
from bot.utils.custom_ids import INDEX, JOB, Action
from bot.utils.flags import Flag, one_of, parse_flags, whole_number
from bot.utils.views import dispatch
from edalle.errors import EdalleError
from edalle.jobs import Job
from edalle.operations import dream
from edalle.operations.base import Picture

if TYPE_CHECKING:
    from bot.bot import EDalleBot

DREAM_EMOJI = '🎨'
MAX_STEPS = 1000  # what a flag may say; the admins' `expand_steps` is checked when the job is queued
MAX_SEED = 2**31 - 1

#: 🎨 under a picture: refine picture `index` of job `job_id` towards its own prompt
DREAM = Action('dream', JOB, INDEX, owner=__name__)


class NoDreamPrompt(EdalleError):
    """Say what to dream, for example `.dream a lighthouse in a storm, oil painting`."""


def read_ratio(text: str) -> str:
    """A dream's ratio as typed (`16:9`), checked by the expander (1:3 to 3:1); raises `BadRatio`."""
    from edalle.expander.canvas import canvas_for_dream
    from edalle.expander.errors import ExpandError

    try:
        return canvas_for_dream(text.strip(), 1 << 30).label
    except ExpandError as exc:
        raise BadRatio(str(exc)) from None


FLAGS = (
    Flag('ar', read_ratio, 'a ratio from 1:3 to 3:1', aliases=('ratio', 'aspect'), example='16:9'),
    Flag('steps', whole_number(1, MAX_STEPS), 'a number of steps', example='50'),
    Flag('seed', whole_number(0, MAX_SEED), 'a seed', example='42'),
    Flag('no', str, 'the words to keep out', words=True, example='text, watermark'),
    Flag('init', one_of(*dream.INITS), f'how to start: {", ".join(dream.INITS)}', example='grey'),
)
FLAG_HELP = '`--ar 16:9`, `--steps N`, `--seed N`, `--no words to keep out`, `--init random|grey|noise`'


class DreamButton(discord.ui.DynamicItem[discord.ui.Button], template=DREAM.template):
    """🎨 Dream under a picture: refine it towards its own prompt."""

    def __init__(self, job_id: int, index: int) -> None:
        button = discord.ui.Button(
            label='Dream', emoji=DREAM_EMOJI, style=discord.ButtonStyle.secondary, custom_id=DREAM.id(job_id, index)
        )
        super().__init__(button)
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> DreamButton:
        return cls(int(match['job_id']), int(match['index']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Dream', 'on_dream', self.job_id, self.index)


ITEMS = (DreamButton,)


class Dream(OperationCog):
    """VQGAN + CLIP from a prompt alone, or a picture refined towards one."""

    operation = dream.OPERATION
    shows_previews = True
    stages = {'dream': 'dreaming'}

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*ITEMS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*ITEMS)

    # -- how its jobs read ------------------------------------------------------------------------------------

    def describe(self, job: Job) -> str:
        payload = job.payload or {}
        prompt = render.quoted(str(payload.get('prompt') or ''), 120)
        if payload.get('init') == dream.REFINE:
            return f'{DREAM_EMOJI} dream of {prompt} from {source_words(job)}'
        return f'{DREAM_EMOJI} dream of {prompt} · {payload.get("ratio") or dream.DEFAULT_RATIO}'

    def picture_controls(self, job: Job, picture: Picture) -> list[discord.ui.Item[Any]]:
        return [DreamButton(job.id, picture.index)]

    def info_details(self, job: Job) -> list[str]:
        payload, result = job.payload or {}, job.result or {}
        settings = result.get('settings') if isinstance(result.get('settings'), dict) else {}
        refine = payload.get('init') == dream.REFINE
        lines = [f'Dreamed from {source_words(job)}' if refine else 'Dreamed from the prompt alone']
        if payload.get('negative_prompt'):
            lines.append(f'Kept out: {render.quoted(str(payload["negative_prompt"]), 300)}')
        for label, key in (('Start', 'init'), ('Steps', 'steps'), ('Seed', 'seed')):
            value = settings.get(key, result.get(key, payload.get(key)))
            if value is not None:
                lines.append(f'{label}: {value}')
        pictures = result.get('pictures') or []
        if pictures:
            lines.append(f'Size: {pictures[0].get("width")}×{pictures[0].get("height")}')
        return lines

    # -- starting one -----------------------------------------------------------------------------------------

    async def start_dream(
        self,
        *,
        user: discord.abc.User,
        guild: discord.Guild | None,
        channel: discord.abc.Messageable,
        prompt: str,
        key: str,
        target: Target | None = None,
        negative: str | None = None,
        ratio: str | None = None,
        init: str | None = None,
        steps: int | None = None,
        seed: int | None = None,
    ) -> Chosen | None:
        """Checks, enqueue and status message for every way of asking; from `target`'s picture when given (returned)."""
        check_channel_permissions(channel)
        guild_id = guild.id if guild else None
        if not prompt.strip():
            raise NoDreamPrompt()
        prompt, _ = await prepare_prompt(self.bot, guild_id, prompt)
        if negative:
            negative, _ = await prepare_prompt(self.bot, guild_id, negative)
        if target is not None and (ratio or init):
            raise BadRatio(
                'A dream from a picture keeps its shape and starts from it: leave out `--ar` and `--init`, '
                'or send the command without a picture to dream from the prompt alone.'
            )
        chosen = await choose(self.bot, user, guild, target, key) if target is not None else None
        limits = await self.bot.store.get_limits(guild_id, user.id)
        request = dream.request(
            user_id=user.id,
            guild_id=guild_id,
            channel_id=getattr(channel, 'id', None),
            prompt=prompt,
            negative_prompt=negative,
            ratio=ratio,
            init=init,
            steps=steps or limits.expand_steps,  # the admins' limit is also what is asked for by default
            seed=seed,
            max_canvas_px=limits.max_canvas_px,
            preset=self.bot.settings.preset,
            request_key=key,
            **(chosen.fields() if chosen is not None else {}),
        )
        await submit_from(self.bot, chosen, request, channel_post(channel))
        return chosen

    async def on_dream(self, interaction: discord.Interaction, job_id: int, index: int) -> None:
        """🎨: refine the picture towards the prompt it was made with."""
        chosen = await job_picture(self.bot, interaction.user, interaction.guild, job_id, index)
        if not chosen.prompt:
            raise NoDreamPrompt('This picture has no prompt to dream towards: reply `.dream <what it should become>` to it.')
        await interaction.response.defer()
        await self.start_dream(
            user=interaction.user,
            guild=interaction.guild,
            channel=interaction.channel,  # type: ignore[arg-type]
            prompt=chosen.prompt,
            key=f'ia:{interaction.id}',
            target=Target(job_id=job_id, index=index),
        )

    # -- the commands -----------------------------------------------------------------------------------------

    @commands.command(name='dream')
    async def dream_text(self, ctx: commands.Context[EDalleBot], *, text: str = '') -> None:
        """Dream a picture from words alone: `.dream <prompt> [--ar 16:9] [--steps N] [--seed N] [--no words]
        [--init random|grey|noise]`. As a reply to one of my pictures (or with an image attached) it refines that
        picture towards the prompt instead."""
        parsed = parse_flags(text, FLAGS)
        if not parsed.text.strip():
            raise NoDreamPrompt(f'Say what to dream, e.g. `.dream a lighthouse in a storm --ar 16:9`; options: {FLAG_HELP}.')
        target = await optional_target(self.bot, ctx.message)
        await self.start_dream(
            user=ctx.author,
            guild=ctx.guild,
            channel=ctx.channel,
            prompt=parsed.text,
            key=request_key(ctx),
            target=target,
            negative=parsed.get('no'),
            ratio=parsed.get('ar'),
            init=parsed.get('init'),
            steps=parsed.get('steps'),
            seed=parsed.get('seed'),
        )

    @app_commands.command(name='dream')
    @app_commands.describe(
        prompt='What to dream',
        ratio='Aspect ratio, from 1:3 to 3:1 (default 1:1)',
        no='What to keep out of the picture',
        init='How to start (default random)',
        steps='Optimisation steps (default and most: this server’s limit)',
        seed='A seed, to dream the same picture again',
        image='An image of your own to refine towards the prompt (its shape is kept)',
    )
    @app_commands.choices(init=[app_commands.Choice(name=name, value=name) for name in dream.INITS])
    async def dream_slash(
        self,
        interaction: discord.Interaction,
        prompt: str,
        ratio: str | None = None,
        no: str | None = None,
        init: str | None = None,
        steps: app_commands.Range[int, 1, MAX_STEPS] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        image: discord.Attachment | None = None,
    ) -> None:
        """Dream a picture from words alone (or refine an image you attach)."""
        checked = read_ratio(ratio) if ratio else None
        await interaction.response.defer(ephemeral=True, thinking=True)  # a download may take a moment
        await self.start_dream(
            user=interaction.user,
            guild=interaction.guild,
            channel=interaction.channel,  # type: ignore[arg-type]
            prompt=prompt,
            key=f'ia:{interaction.id}',
            target=Target(attachment=image) if image is not None else None,
            negative=no,
            ratio=checked,
            init=init,
            steps=steps,
            seed=seed,
        )
        await interaction.edit_original_response(content=f'Dreaming {render.quoted(prompt, 200)}.')


async def setup(bot: EDalleBot) -> None:
    await bot.add_cog(Dream(bot))
