"""imagine's Discord side: `.imagine` / `/imagine`, the grid (pick by button or 1️⃣…9️⃣ reaction, 🔄 reroll).

The command is parse, check, one `enqueue`, reply (`bot.admission`). The grid's buttons and reactions
read the job from the store by the id in the component or on the message, so they work on any old grid
after any number of restarts. A pick posts that candidate alone, with every next step's controls
(`bot.operations.post_picture`).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import check_channel_permissions, clean_imagine_prompt, request_key, submit
from bot.errors import EdalleError, send_note, user_message
from bot.operations import OperationCog, Outgoing, post_picture, reencoded_note
from bot.utils import render, results
from bot.utils.checks import require_owner
from bot.utils.custom_ids import INDEX, JOB, Action, first_match
from bot.utils.images import load_upload, upload_limit
from bot.utils.views import CancelButton, dispatch, make_view
from edalle.errors import JobNotFound
from edalle.jobs import Job, JobRequest
from edalle.operations import imagine
from edalle.operations.base import Picture, pictures_of

if TYPE_CHECKING:
    from bot.bot import EDalleBot

log = logging.getLogger(__name__)

GRID_SIZE = 9  # candidates with a button (a 3×3 grid)
NUMBER_EMOJI = ('1️⃣', '2️⃣', '3️⃣', '4️⃣', '5️⃣', '6️⃣', '7️⃣', '8️⃣', '9️⃣')

#: a candidate button under a grid: post candidate `index` of imagine job `job_id`
PICK = Action('pick', JOB, INDEX, owner=__name__)
#: a new imagine job with the same prompt and a new seed
REROLL = Action('reroll', JOB, owner=__name__)


class PickButton(discord.ui.DynamicItem[discord.ui.Button], template=PICK.template):
    """Candidate `index + 1` under a grid."""

    def __init__(self, job_id: int, index: int) -> None:
        button = discord.ui.Button(
            label=str(index + 1),
            style=discord.ButtonStyle.primary if index == 0 else discord.ButtonStyle.secondary,
            custom_id=PICK.id(job_id, index),
            row=0 if index < 5 else 1,
        )
        super().__init__(button)
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> PickButton:
        return cls(int(match['job_id']), int(match['index']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Imagine', 'on_pick', self.job_id, self.index)


class RerollButton(discord.ui.DynamicItem[discord.ui.Button], template=REROLL.template):
    def __init__(self, job_id: int) -> None:
        button = discord.ui.Button(emoji='🔄', style=discord.ButtonStyle.secondary, custom_id=REROLL.id(job_id), row=1)
        super().__init__(button)
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RerollButton:
        return cls(int(match['job_id']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Imagine', 'on_reroll', self.job_id)


ITEMS = (PickButton, RerollButton)


def grid_view(job_id: int, candidate_count: int) -> discord.ui.View:
    """Under an imagine result: 1–5 / 6–9 🔄 / ✖ (Discord allows five buttons a row)."""
    picks = [PickButton(job_id, index) for index in range(min(candidate_count, GRID_SIZE))]
    return make_view(*picks, RerollButton(job_id), CancelButton(job_id, row=2))


def imagine_request(
    bot: EDalleBot, *, user_id: int, guild_id: int | None, channel_id: int | None, prompt: str, request_key: str
) -> JobRequest:
    """A draft for nine candidates: `submit` fits it to the guild's settings inside the enqueue."""
    return imagine.request(
        user_id=user_id,
        guild_id=guild_id,
        channel_id=channel_id,
        prompt=prompt,
        n=9,
        preset=bot.settings.preset,
        request_key=request_key,
    )


class Imagine(OperationCog):
    """Draw candidates for a prompt and pick one."""

    operation = imagine.OPERATION
    stages = {'encode': 'reading the prompt', 'sample': 'drawing', 'decode': 'decoding', 'rank': 'ranking with CLIP'}

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*ITEMS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*ITEMS)

    # -- how its jobs read ------------------------------------------------------------------------------------

    def describe(self, job: Job) -> str:
        return f'🎨 {render.quoted(results.prompt_of(job))}'

    async def result_message(self, job: Job) -> Outgoing:
        await self.fetch_files(job)
        guild = self.bot.get_guild(job.guild_id) if job.guild_id else None
        limit = upload_limit(guild, self.bot.settings.max_upload_bytes)
        found = pictures_of(job.result)
        upload = await load_upload(results.grid_path(job, self.bot.settings.data_dir), limit, f'job-{job.id}-grid.png')
        return Outgoing(self.grid_text(job, found) + reencoded_note(upload), [upload], grid_view(job.id, len(found)))

    def grid_text(self, job: Job, found: list[Picture]) -> str:
        best = found[0] if found else None
        facts = [f'job #{job.id}', f'{len(found)} candidates, best first by CLIP']
        if best is not None and best.score is not None:
            facts.append(f'best score {best.score:.3f}')
        if job.run_seconds:
            facts.append(f'{job.run_seconds:.0f} s')
        lines = [f'{self.describe(job)} · <@{job.user_id}>', ' · '.join(facts)]
        last = NUMBER_EMOJI[min(len(found), 9) - 1] if found else ''
        lines.append(f'Pick one with the buttons, or react {NUMBER_EMOJI[0]}…{last}.')
        if results.was_truncated(job):
            lines.append('(The prompt was longer than the model reads; only its start was used.)')
        return '\n'.join(lines)

    def picture_caption(self, job: Job, picture: Picture) -> str:
        return f'candidate {picture.index + 1} of job #{job.id}'

    # -- the command ------------------------------------------------------------------------------------------

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

        await submit(self.bot, request, post, cut=cut)

    # -- the grid ---------------------------------------------------------------------------------------------

    async def load_imagine(self, job_id: int) -> Job:
        job = await self.bot.store.get(job_id)
        if job.kind != self.operation.name:
            raise JobNotFound(job_id)
        return job

    async def on_pick(self, interaction: discord.Interaction, job_id: int, index: int) -> None:
        await interaction.response.defer()
        job = await self.load_imagine(job_id)
        await require_owner(self.bot, interaction.user, interaction.guild, job)
        await post_picture(self.bot, interaction.channel, job, index, nonce=f'pick{interaction.id}')  # type: ignore[arg-type]

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

        await submit(self.bot, request, post)

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
        pick = first_match(
            PICK, [getattr(c, 'custom_id', '') for row in message.components for c in getattr(row, 'children', [])]
        )
        if message.author.id != self.bot.user.id or pick is None:
            return
        user = payload.member or self.bot.get_user(payload.user_id) or await self.bot.fetch_user(payload.user_id)
        guild = self.bot.get_guild(payload.guild_id) if payload.guild_id else None
        try:
            job = await self.load_imagine(int(pick['job_id']))
            try:
                await require_owner(self.bot, user, guild, job)
            except EdalleError:
                return  # someone else's grid: reactions are votes, not requests
            nonce = f'react{payload.message_id % 10**9}{emoji[0]}'
            await post_picture(self.bot, channel, job, NUMBER_EMOJI.index(emoji), nonce=nonce)
        except Exception as exc:
            text = user_message(exc, context=f'reaction {emoji} by user {payload.user_id} on message {payload.message_id}')
            await send_note(channel, user, text)


async def setup(bot: EDalleBot) -> None:
    await bot.add_cog(Imagine(bot))
