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

from bot.admission import check_channel_permissions, clean_imagine_prompt, clean_negative, request_key, submit
from bot.errors import EdalleError, send_note, user_message
from bot.operations import OperationCog, Outgoing, post_picture, reencoded_note
from bot.utils import render, results
from bot.utils.checks import require_owner
from bot.utils.custom_ids import INDEX, JOB, Action, first_match
from bot.utils.flags import Flag, FlagError, Parsed, number, parse_flags, whole_number
from bot.utils.images import load_upload, upload_limit
from bot.utils.views import CancelButton, dispatch, make_view, numbered_button
from edalle.errors import JobNotFound
from edalle.jobs import Job, JobRequest
from edalle.operations import imagine
from edalle.operations.base import Picture, pictures_of

if TYPE_CHECKING:
    from bot.bot import EDalleBot

log = logging.getLogger(__name__)

NO_PINGS = discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False)

GRID_SIZE = 9  # candidates with a button (a 3×3 grid)
NUMBER_EMOJI = ('1️⃣', '2️⃣', '3️⃣', '4️⃣', '5️⃣', '6️⃣', '7️⃣', '8️⃣', '9️⃣')

#: a candidate button under a grid: post candidate `index` of imagine job `job_id`
PICK = Action('pick', JOB, INDEX, owner=__name__)
#: a new imagine job with the same prompt and knobs, and a new seed
REROLL = Action('reroll', JOB, owner=__name__)
#: 🖋 Remix: the grid's request in a form to edit and draw again
REMIX = Action('remix', JOB, owner=__name__)


class PickButton(discord.ui.DynamicItem[discord.ui.Button], template=PICK.template):
    """Candidate `index + 1` under a grid."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(numbered_button(PICK.id(job_id, index), index))
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


class RemixButton(discord.ui.DynamicItem[discord.ui.Button], template=REMIX.template):
    """🖋 Remix: the grid's request in a form (prompt, negative, seed, knobs) to edit and draw again."""

    def __init__(self, job_id: int) -> None:
        button = discord.ui.Button(
            emoji='🖋️', label='Remix', style=discord.ButtonStyle.secondary, custom_id=REMIX.id(job_id), row=2
        )
        super().__init__(button)
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RemixButton:
        return cls(int(match['job_id']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Imagine', 'on_remix', self.job_id)


class RemixForm(discord.ui.Modal, title='Remix'):
    """The grid's request, every field editable; submitting draws it as a new job (through `dispatch`, so the
    guard sees it). Its custom_id names the job it remixes."""

    prompt: discord.ui.TextInput = discord.ui.TextInput(
        label='Prompt', custom_id='prompt', style=discord.TextStyle.paragraph, max_length=1000
    )
    negative: discord.ui.TextInput = discord.ui.TextInput(
        label='Negative prompt (what to avoid)', custom_id='negative', required=False, max_length=imagine.MAX_NEGATIVE_CHARS
    )
    seed: discord.ui.TextInput = discord.ui.TextInput(
        label='Seed (empty: a new one)', custom_id='seed', required=False, max_length=12
    )
    knobs: discord.ui.TextInput = discord.ui.TextInput(
        label='Knobs', custom_id='knobs', required=False, max_length=200, placeholder='--temp 1 --topk 50 --scale 10'
    )

    def __init__(self, job: Job) -> None:
        super().__init__(custom_id=f'{REMIX.id(job.id)}:form')
        payload = job.payload or {}
        knobs = imagine.Knobs.of(payload)
        self.job_id = job.id
        self.prompt.default = str(payload.get('prompt') or '')[:1000]
        self.negative.default = knobs.negative
        self.knobs.default = knobs_flags(knobs)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        values = (self.prompt.value, self.negative.value, self.seed.value, self.knobs.value)
        await dispatch(interaction, 'Imagine', 'on_remix_submit', self.job_id, *values)


ITEMS = (PickButton, RerollButton, RemixButton)


def grid_view(job_id: int, candidate_count: int) -> discord.ui.View:
    """Under an imagine result: 1–5 / 6–9 🔄 / ✖ 🖋 (Discord allows five buttons a row)."""
    picks = [PickButton(job_id, index) for index in range(min(candidate_count, GRID_SIZE))]
    return make_view(*picks, RerollButton(job_id), CancelButton(job_id, row=2), RemixButton(job_id))


# ---- the knobs, as members type them -------------------------------------------------------------------------


def _top_k(text: str) -> int | None:
    if text.strip().lower() in ('all', 'off', 'none', '0'):
        return None
    return whole_number(1, imagine.CODEBOOK_SIZE)(text)


def _top_p(text: str) -> float | None:
    value = number(0.0, 1.0)(text)
    if value == 0.0:
        raise ValueError('a number above 0 and at most 1 (got 0).')
    return None if value == 1.0 else value  # top-p 1 keeps every code, as no top-p does


#: flag name → (the knob it sets, its `Flag`); the same flags in `.imagine`, `.settings`, Remix and `/settings`
KNOB_FLAGS: dict[str, tuple[str, Flag]] = {
    'temperature': (
        'temperature',
        Flag('temperature', number(*imagine.KNOB_RANGES['temperature']), 'a temperature', '0.9', ('temp',)),
    ),
    'top-k': ('top_k', Flag('top-k', _top_k, 'a number of codes, or all', '128', ('topk', 'top_k'))),
    'top-p': ('top_p', Flag('top-p', _top_p, 'a share of probability above 0', '0.95', ('topp', 'top_p'))),
    'scale': (
        'cond_scale',
        Flag('scale', number(*imagine.KNOB_RANGES['cond_scale']), 'a condition scale', '12', ('cond', 'cond-scale')),
    ),
    'no': ('negative', Flag('no', str, 'words to avoid', 'text, watermark', words=True)),
}
SEED_FLAG = Flag('seed', whole_number(0, imagine.MAX_SEED - imagine.MAX_CANDIDATES), 'a seed', '42')
COUNT_FLAG = Flag('n', whole_number(1, imagine.MAX_CANDIDATES), 'a number of candidates', '4')


def knobs_from(parsed: Parsed) -> dict[str, Any]:
    """The knobs a command's flags set, by knob name."""
    return {knob: parsed.get(name) for name, (knob, _) in KNOB_FLAGS.items() if name in parsed.values}


def knobs_from_options(
    temperature: float | None, top_k: int | None, top_p: float | None, scale: float | None, negative: str | None
) -> dict[str, Any]:
    """The knobs a slash command's options set (those left out are not set): top-k 0 is every code, top-p 1 none."""
    given = {
        'temperature': temperature,
        'top_k': None if top_k is None else top_k or None,
        'top_p': None if top_p is None or top_p == 1.0 else top_p,
        'cond_scale': scale,
        'negative': negative,
    }
    asked = {'temperature': temperature, 'top_k': top_k, 'top_p': top_p, 'cond_scale': scale, 'negative': negative}
    return {name: value for name, value in given.items() if asked[name] is not None}


def knobs_flags(knobs: imagine.Knobs) -> str:
    """Knobs as the flags that set them (the negative prompt apart): `--temp 1 --topk 50 --scale 10`."""
    parts = [f'--temp {knobs.temperature:g}', f'--topk {knobs.top_k if knobs.top_k is not None else "all"}']
    if knobs.top_p is not None:
        parts.append(f'--topp {knobs.top_p:g}')
    parts.append(f'--scale {knobs.cond_scale:g}')
    return ' '.join(parts)


def imagine_request(
    bot: EDalleBot,
    *,
    user_id: int,
    guild_id: int | None,
    channel_id: int | None,
    prompt: str,
    request_key: str,
    knobs: dict[str, Any] | None = None,
    seed: int | None = None,
    n: int = 9,
) -> JobRequest:
    """A draft (nine candidates unless asked): `submit` fits it to the guild's settings inside the enqueue."""
    return imagine.request(
        user_id=user_id,
        guild_id=guild_id,
        channel_id=channel_id,
        prompt=prompt,
        n=n,
        seed=seed,
        knobs=knobs,
        preset=bot.settings.preset,
        request_key=request_key,
    )


class Imagine(OperationCog):
    """Draw candidates for a prompt and pick one."""

    operation = imagine.OPERATION
    shows_previews = True  # the grid as it forms
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

    @commands.command(name='imagine')
    async def imagine_text(self, ctx: commands.Context[EDalleBot], *, prompt: str) -> None:
        """Draw candidates for a prompt, ranked best-first by CLIP; pick one to expand it.

        `.imagine a fox in snow --seed 42 --temp 0.9 --topk 128 --topp 0.95 --scale 12 --no text, watermark -n 4`:
        every flag is optional (your `.settings` fill in the knobs you leave out); `{red, blue}` in a prompt draws
        one grid per choice (at most 4).
        """
        flags = [SEED_FLAG, COUNT_FLAG, *(flag for _, flag in KNOB_FLAGS.values())]
        parsed = parse_flags(prompt, flags)
        await self.start_imagine(
            ctx.author,
            ctx.guild,
            ctx.channel,
            parsed.text,
            knobs_from(parsed),
            seed=parsed.get('seed'),
            n=parsed.get('n', 9),
            key=request_key(ctx),
            post=lambda content, view: ctx.reply(content, view=view, mention_author=False),
        )

    @app_commands.command(name='imagine')
    @app_commands.describe(
        prompt='What to draw, e.g. "a lighthouse in a storm, oil painting"; {red, blue} draws one grid per choice',
        negative='What to avoid, e.g. "text, watermark"',
        seed='The seed (default: a new one)',
        temperature='Randomness of the drawing (default 1)',
        top_k='Draw from this many likeliest codes at each step; 0 for all (default 50)',
        top_p='Draw from the likeliest codes holding this share of probability (default off)',
        scale='How strongly the prompt steers (condition scale, default 10)',
        candidates='How many candidates (default 9)',
    )
    async def imagine_slash(
        self,
        interaction: discord.Interaction,
        prompt: str,
        negative: str | None = None,
        seed: app_commands.Range[int, 0, imagine.MAX_SEED - imagine.MAX_CANDIDATES] | None = None,
        temperature: app_commands.Range[float, 0.05, 5.0] | None = None,
        top_k: app_commands.Range[int, 0, imagine.CODEBOOK_SIZE] | None = None,
        top_p: app_commands.Range[float, 0.01, 1.0] | None = None,
        scale: app_commands.Range[float, 0.0, 50.0] | None = None,
        candidates: app_commands.Range[int, 1, imagine.MAX_CANDIDATES] | None = None,
    ) -> None:
        """Draw candidates for a prompt, ranked best-first by CLIP; pick one to expand it."""
        knobs = knobs_from_options(temperature, top_k, top_p, scale, negative)

        async def post(content: str, view: discord.ui.View) -> discord.Message:
            if not interaction.response.is_done():
                await interaction.response.send_message(content, view=view, allowed_mentions=NO_PINGS)
                return await interaction.original_response()
            return await interaction.followup.send(content, view=view, wait=True, allowed_mentions=NO_PINGS)

        await self.start_imagine(
            interaction.user,
            interaction.guild,
            interaction.channel,
            prompt,
            knobs,
            seed=seed,
            n=candidates or 9,
            key=f'ia:{interaction.id}',
            post=post,
        )

    async def start_imagine(
        self,
        user: discord.abc.User,
        guild: discord.Guild | None,
        channel: Any,
        prompt: str,
        knobs: dict[str, Any],
        *,
        seed: int | None,
        n: int,
        key: str,
        post: Any,
    ) -> None:
        """Every way of asking (text, slash, Remix): the member's saved knobs under the ones given now, one job per
        `{…}` variant of the prompt (each charged), the same checks and words (`bot.admission.submit`)."""
        check_channel_permissions(channel)
        text, cut = clean_imagine_prompt(self.bot, prompt)
        if 'negative' in knobs:
            knobs['negative'] = clean_negative(self.bot, knobs['negative'])
        variants = imagine.prompt_variants(text)
        merged = {**await self.bot.store.member_settings(user.id), **knobs}
        imagine.validate_knobs(imagine.Knobs.of(merged))  # one short message with the range; nothing charged
        for position, variant in enumerate(variants):
            request = imagine_request(
                self.bot,
                user_id=user.id,
                guild_id=guild.id if guild else None,
                channel_id=getattr(channel, 'id', None),
                prompt=variant,
                request_key=key if len(variants) == 1 else f'{key}:v{position}',
                knobs=merged,
                seed=seed,
                n=n,
            )
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
        payload = job.payload or {}
        request = imagine_request(
            self.bot,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            prompt=text,
            request_key=f'ia:{interaction.id}',
            knobs={name: payload[name] for name in imagine.KNOB_NAMES if name in payload},  # the same knobs
            n=int(payload.get('n') or 9),
        )

        async def post(content: str, view: discord.ui.View) -> discord.Message:
            return await channel.send(content, view=view)  # type: ignore[union-attr]

        await submit(self.bot, request, post)

    async def on_remix(self, interaction: discord.Interaction, job_id: int) -> None:
        """🖋: the grid's request in a form; the owner (or an admin) edits it and draws it again."""
        job = await self.load_imagine(job_id)
        await require_owner(self.bot, interaction.user, interaction.guild, job)
        await interaction.response.send_modal(RemixForm(job))

    async def on_remix_submit(
        self, interaction: discord.Interaction, job_id: int, prompt: str, negative: str, seed: str, line: str
    ) -> None:
        job = await self.load_imagine(job_id)
        await require_owner(self.bot, interaction.user, interaction.guild, job)
        parsed = parse_flags(line, [flag for _, flag in KNOB_FLAGS.values() if flag.name != 'no'])
        knobs = {**{n: v for n, v in (job.payload or {}).items() if n in imagine.KNOB_NAMES}, **knobs_from(parsed)}
        knobs['negative'] = negative
        seed_value = SEED_FLAG.read(seed) if seed.strip() else None
        await interaction.response.defer()
        channel = interaction.channel

        async def post(content: str, view: discord.ui.View) -> discord.Message:
            return await channel.send(content, view=view)  # type: ignore[union-attr]

        await self.start_imagine(
            interaction.user,
            interaction.guild,
            channel,
            prompt,
            knobs,
            seed=seed_value,
            n=int((job.payload or {}).get('n') or 9),
            key=f'ia:{interaction.id}',
            post=post,
        )

    # -- a member's own defaults ------------------------------------------------------------------------------

    @commands.command(name='settings')
    async def settings_text(self, ctx: commands.Context[EDalleBot], *, flags: str = '') -> None:
        """Your own defaults for `.imagine`: `.settings --temp 0.9 --topk 128 --no text` sets them, `.settings reset`
        forgets them all, `.settings` shows them. Flags on a command still win."""
        if flags.strip().lower() == 'reset':
            for name in imagine.KNOB_NAMES:
                await self.bot.store.set_member_setting(ctx.author.id, name, None)
            await ctx.reply('Your defaults are the usual ones again.', mention_author=False)
            return
        parsed = parse_flags(flags, [flag for _, flag in KNOB_FLAGS.values()])
        if parsed.text:
            raise FlagError(f'`.settings` takes flags only (`--temp 0.9`), not “{parsed.text}”.')
        await ctx.reply(await self.save_settings(ctx.author.id, knobs_from(parsed)), mention_author=False)

    @app_commands.command(name='settings')
    @app_commands.describe(
        temperature='Randomness of the drawing (usual: 1)',
        top_k='The likeliest codes drawn from; 0 for all (usual: 50)',
        top_p='The share of probability drawn from; 1 for off (usual: off)',
        scale='How strongly the prompt steers (usual: 10)',
        negative='What to avoid in every drawing; "-" for nothing',
        reset='Forget all your defaults',
    )
    async def settings_slash(
        self,
        interaction: discord.Interaction,
        temperature: app_commands.Range[float, 0.05, 5.0] | None = None,
        top_k: app_commands.Range[int, 0, imagine.CODEBOOK_SIZE] | None = None,
        top_p: app_commands.Range[float, 0.01, 1.0] | None = None,
        scale: app_commands.Range[float, 0.0, 50.0] | None = None,
        negative: str | None = None,
        reset: bool = False,
    ) -> None:
        """Your own defaults for /imagine's knobs (flags and options still win)."""
        if reset:
            for name in imagine.KNOB_NAMES:
                await self.bot.store.set_member_setting(interaction.user.id, name, None)
            await interaction.response.send_message('Your defaults are the usual ones again.', ephemeral=True)
            return
        if negative is not None and negative.strip() == '-':
            negative = ''
        knobs = knobs_from_options(temperature, top_k, top_p, scale, negative)
        await interaction.response.send_message(await self.save_settings(interaction.user.id, knobs), ephemeral=True)

    async def save_settings(self, user_id: int, knobs: dict[str, Any]) -> str:
        """Check and keep a member's defaults (None or the usual value forgets one); the sentence that shows them."""
        if 'negative' in knobs:
            knobs['negative'] = clean_negative(self.bot, knobs['negative'])
        saved = await self.bot.store.member_settings(user_id)
        imagine.validate_knobs(imagine.Knobs.of({**saved, **knobs}))
        usual = imagine.Knobs()
        for name, value in knobs.items():
            keep = value if value != getattr(usual, name) else None
            saved = await self.bot.store.set_member_setting(user_id, name, keep)
        return (
            'Your defaults: '
            + render.knobs_line(imagine.Knobs.of(saved).to_json())
            + ('' if saved else ' (the usual ones).')
        )

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
