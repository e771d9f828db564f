"""vary's Discord side: 🪄 Vary (subtle) and 🌀 Vary (strong) under a picture, `.vary` as a reply, `/vary`, and the grid
of variations (pick one with its buttons).

A variation keeps the top token rows of a 256×256 picture and redraws the rest with the picture's prompt (or a
new one typed with `.vary`), its settings and new seeds: subtle keeps the top three quarters, strong the top
quarter. The result is a 3×3 grid ranked like an imagine's, by CLIP with the likeness to the picture added;
a pick from it is posted alone with every control any picture gets (`bot.operations.post_picture`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import check_channel_permissions, prepare_prompt, request_key
from bot.operations import OperationCog, Outgoing, post_picture, reencoded_note
from bot.sources import Target, channel_post, choose, find_target, slash_target, source_words, submit_from
from bot.utils import render, results
from bot.utils.checks import require_owner
from bot.utils.custom_ids import INDEX, JOB, Action
from bot.utils.images import load_upload, upload_limit
from bot.utils.views import CancelButton, dispatch, make_view, numbered_button
from edalle.errors import EdalleError, JobNotFound
from edalle.jobs import Job
from edalle.operations import vary
from edalle.operations.base import PICTURE_SIDE, Picture, pictures_of

if TYPE_CHECKING:
    from bot.bot import EDalleBot

GRID_SIZE = 9  # variations with a button
EMOJI = {'subtle': '🪄', 'strong': '🌀'}
STRENGTH = r'(?P<strength>subtle|strong)'

#: 🪄 / 🌀 under a picture: vary picture `index` of job `job_id`
VARY = Action('vary', JOB, INDEX, STRENGTH, owner=__name__)
#: a numbered button under a grid of variations: post variation `index` of vary job `job_id`
VARIATION = Action('variation', JOB, INDEX, owner=__name__)


NEEDS_PROMPT = 'Say what your picture shows after `.vary` (e.g. `.vary subtle a red fox in the snow`): it has no prompt.'


class NoPrompt(EdalleError):
    """A variation of a member's image needs a prompt."""


class NothingToVary(EdalleError):
    """Reply to one of my pictures to vary it."""

    def __init__(self) -> None:
        super().__init__(
            'There is nothing to vary: reply to one of my 256×256 pictures (a picked candidate or a grid) with '
            '`.vary [subtle|strong] [prompt]`, attach an image to it, or use `/vary`.'
        )


class VaryButton(discord.ui.DynamicItem[discord.ui.Button], template=VARY.template):
    """🪄 Vary (subtle) or 🌀 Vary (strong) under a 256×256 picture."""

    def __init__(self, job_id: int, index: int, strength: str) -> None:
        button = discord.ui.Button(
            label=f'Vary ({strength})',
            emoji=EMOJI[strength],
            style=discord.ButtonStyle.secondary,
            custom_id=VARY.id(job_id, index, strength),
        )
        super().__init__(button)
        self.job_id, self.index, self.strength = job_id, index, strength

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> VaryButton:
        return cls(int(match['job_id']), int(match['index']), match['strength'])

    async def callback(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Vary', 'on_vary', self.job_id, self.index, self.strength)


class VariationButton(discord.ui.DynamicItem[discord.ui.Button], template=VARIATION.template):
    """Variation `index + 1` under a grid of variations."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(numbered_button(VARIATION.id(job_id, index), index))
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> VariationButton:
        return cls(int(match['job_id']), int(match['index']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Vary', 'on_pick', self.job_id, self.index)


ITEMS = (VaryButton, VariationButton)


def grid_view(job_id: int, count: int) -> discord.ui.View:
    """Under a grid of variations: 1–5 / 6–9 ✖ (Discord allows five buttons a row)."""
    picks = [VariationButton(job_id, index) for index in range(min(count, GRID_SIZE))]
    return make_view(*picks, CancelButton(job_id, row=1 if len(picks) < 9 else 2))


def accepts(picture: Picture) -> bool:
    """A variation keeps token rows of a 256×256 picture (16×16 tokens)."""
    return (picture.width, picture.height) == (PICTURE_SIDE, PICTURE_SIDE)


def strength_of(job: Job) -> str:
    return str((job.payload or {}).get('strength') or 'subtle')


class Vary(OperationCog):
    """Redraw the lower part of a picture (its top rows kept)."""

    operation = vary.OPERATION
    shows_previews = True
    stages = {'encode': 'reading the prompt', 'sample': 'drawing', 'decode': 'decoding', 'rank': 'ranking with CLIP'}

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*ITEMS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*ITEMS)

    # -- how its jobs read ------------------------------------------------------------------------------------

    def describe(self, job: Job) -> str:
        strength = strength_of(job)
        prompt = results.prompt_of(job)
        said = f': {render.quoted(prompt)}' if prompt else ''
        return f'{EMOJI.get(strength, "🪄")} vary ({strength}) of {source_words(job)}{said}'

    async def result_message(self, job: Job) -> Outgoing:
        await self.fetch_files(job)
        guild = self.bot.get_guild(job.guild_id) if job.guild_id else None
        limit = upload_limit(guild, self.bot.settings.max_upload_bytes)
        found = pictures_of(job.result)
        upload = await load_upload(results.grid_path(job, self.bot.settings.data_dir), limit, f'job-{job.id}-grid.png')
        return Outgoing(self.grid_text(job, found) + reencoded_note(upload), [upload], grid_view(job.id, len(found)))

    def grid_text(self, job: Job, found: list[Picture]) -> str:
        strength = strength_of(job)
        facts = [f'job #{job.id}', f'{len(found)} variations, best first by CLIP (the prompt, and likeness to the picture)']
        if job.run_seconds:
            facts.append(f'{job.run_seconds:.0f} s')
        lines = [
            f'{self.describe(job)} · <@{job.user_id}>',
            ' · '.join(facts),
            f'Each {vary.CHANGES[strength]} of the picture ({vary.STRENGTHS[strength]} of its 16 token rows kept).',
            'Pick one with the buttons.',
        ]
        if results.was_truncated(job):
            lines.append('(The prompt was longer than the model reads; only its start was used.)')
        return '\n'.join(lines)

    def picture_caption(self, job: Job, picture: Picture) -> str:
        return f'variation {picture.index + 1} of job #{job.id}'

    def picture_controls(self, job: Job, picture: Picture) -> list[discord.ui.Item[Any]]:
        if not accepts(picture):
            return []
        return [VaryButton(job.id, picture.index, strength) for strength in vary.STRENGTHS]

    def picture_hint(self, job: Job, picture: Picture) -> str | None:
        if not accepts(picture):
            return None
        return (
            f'🪄 Vary (subtle) {vary.CHANGES["subtle"]}; 🌀 Vary (strong) {vary.CHANGES["strong"]} '
            '(same prompt and settings, new seeds).'
        )

    def info_details(self, job: Job) -> list[str]:
        strength = strength_of(job)
        result = job.result or {}
        lines = [
            f'Variation ({strength}) of {source_words(job)}: {vary.CHANGES[strength]} '
            f'({vary.STRENGTHS[strength]} of 16 token rows kept)',
            f'Ranked by CLIP: the prompt + {vary.SIMILARITY_WEIGHT:g} × likeness to the picture',
        ]
        if result.get('seed') is not None:
            count = len(pictures_of(result))
            lines.append(f'Seeds: {result["seed"]}–{int(result["seed"]) + max(count - 1, 0)} (one per variation)')
        return lines

    # -- starting one -----------------------------------------------------------------------------------------

    async def start_vary(
        self,
        *,
        user: discord.abc.User,
        guild: discord.Guild | None,
        channel: discord.abc.Messageable,
        target: Target,
        strength: str,
        prompt: str | None,
        key: str,
    ) -> None:
        """Checks, enqueue and status message for every way of asking (button, command). A member's image is cut to
        its centre 256×256 square and needs a prompt (it has none of its own)."""
        vary.check_strength(strength)
        check_channel_permissions(channel)
        if target.attachment is not None and not prompt:
            raise NoPrompt(NEEDS_PROMPT)
        if prompt:
            prompt, _ = await prepare_prompt(self.bot, guild.id if guild else None, prompt)
        chosen = await choose(self.bot, user, guild, target, key, fit='square')
        request = vary.request(
            user_id=user.id,
            guild_id=guild.id if guild else None,
            channel_id=getattr(channel, 'id', None),
            strength=strength,
            prompt=prompt or None,
            n=GRID_SIZE,
            preset=self.bot.settings.preset,
            request_key=key,
            **chosen.fields(),
        )
        await submit_from(self.bot, chosen, request, channel_post(channel))

    # -- components -------------------------------------------------------------------------------------------

    async def on_vary(self, interaction: discord.Interaction, job_id: int, index: int, strength: str) -> None:
        await interaction.response.defer()
        await self.start_vary(
            user=interaction.user,
            guild=interaction.guild,
            channel=interaction.channel,  # type: ignore[arg-type]
            target=Target(job_id=job_id, index=index),
            strength=strength,
            prompt=None,
            key=f'ia:{interaction.id}',
        )

    async def on_pick(self, interaction: discord.Interaction, job_id: int, index: int) -> None:
        await interaction.response.defer()
        job = await self.bot.store.get(job_id)
        if job.kind != self.operation.name:
            raise JobNotFound(job_id)
        await require_owner(self.bot, interaction.user, interaction.guild, job)
        await post_picture(self.bot, interaction.channel, job, index, nonce=f'pick{interaction.id}')  # type: ignore[arg-type]

    # -- the commands -----------------------------------------------------------------------------------------

    @commands.command(name='vary')
    async def vary_text(self, ctx: commands.Context[EDalleBot], *, words: str = '') -> None:
        """Vary one of my 256×256 pictures: reply `.vary [subtle|strong] [prompt]` to it (a grid means its best).

        subtle (the default) keeps the top three quarters and redraws the bottom quarter; strong keeps the top
        quarter and redraws the rest. Without a prompt, the picture's own is used.
        """
        first, _, rest = words.strip().partition(' ')
        strength, prompt = (first.lower(), rest.strip()) if first.lower() in vary.STRENGTHS else ('subtle', words.strip())
        target = await find_target(self.bot, ctx.message, NothingToVary)
        await self.start_vary(
            user=ctx.author,
            guild=ctx.guild,
            channel=ctx.channel,
            target=target,
            strength=strength,
            prompt=prompt or None,
            key=request_key(ctx),
        )

    @app_commands.command(name='vary')
    @app_commands.choices(strength=[app_commands.Choice(name=f'{s}: {vary.CHANGES[s]}', value=s) for s in vary.STRENGTHS])
    @app_commands.describe(
        strength='subtle: redraw the bottom quarter; strong: redraw the bottom three quarters',
        prompt='What the variation should show (default: the picture’s own prompt)',
        job='The job whose picture to vary (default: your latest one with a 256×256 picture)',
        picture='Which picture of that job, 1–9 (default 1, the best)',
        image='Or your own picture (its centre square; then say what it shows in prompt)',
    )
    async def vary_slash(
        self,
        interaction: discord.Interaction,
        strength: app_commands.Choice[str] | None = None,
        prompt: str | None = None,
        job: int | None = None,
        picture: app_commands.Range[int, 1, 9] = 1,
        image: discord.Attachment | None = None,
    ) -> None:
        """Vary one of your pictures, or an image you attach: keep its top rows and redraw the rest."""
        chosen = strength.value if strength is not None else 'subtle'
        target = await slash_target(self.bot, interaction.user.id, job, picture, image, NothingToVary, accepts)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.start_vary(
            user=interaction.user,
            guild=interaction.guild,
            channel=interaction.channel,  # type: ignore[arg-type]
            target=target,
            strength=chosen,
            prompt=prompt,
            key=f'ia:{interaction.id}',
        )
        what = f'job #{target.job_id}, picture {picture}' if target.job_id is not None else 'your image'
        await interaction.edit_original_response(content=f'Varying {what} ({chosen}).')


async def setup(bot: EDalleBot) -> None:
    await bot.add_cog(Vary(bot))
