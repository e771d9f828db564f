"""The Discord side of operations: the base of each operation's cog, and what every job and picture shares.

Each operation of the registry (`edalle.operations`) names its bot module (`Operation.discord`, e.g.
`bot.cogs.imagine`), an extension holding one `OperationCog`: its commands, components and modals, and
how its jobs read (`describe`) and its results look (`result_message`). Delivery, `.job`, ℹ️ and the
picture controls find that cog through `operation_cog(bot, kind)`, so they never name an operation.

A picture posted alone (a picked candidate, a widened picture) carries the controls every operation
offers for it (`OperationCog.picture_controls`: expand's ratios, …), 🎞️ where its job's result has a
time-lapse (`media_of`), and ℹ️, laid out by `picture_view`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import discord
from discord.ext import commands

from bot.utils import render
from bot.utils.custom_ids import parse, picture_target
from bot.utils.images import Upload, load_upload, upload_limit
from bot.utils.results import picture_path
from bot.utils.views import InfoButton, TimelapseButton, make_view
from edalle import operations
from edalle.errors import EdalleError, JobNotFound
from edalle.jobs import Job, JobStatus
from edalle.jobs.result_store import materialize
from edalle.operations.base import TIMELAPSE, Operation, Picture, media_of, picture_of, pictures_of

if TYPE_CHECKING:
    from bot.bot import EDalleBot
    from edalle.jobs import JobStore

BUTTONS_PER_ROW = 5
ROWS_PER_MESSAGE = 5  # Discord's limit for components on one message


class NoSuchPicture(EdalleError):
    """That picture does not exist."""


@dataclass
class Outgoing:
    """One message to post: text, files, components."""

    content: str
    uploads: list[Upload] = field(default_factory=list)
    view: discord.ui.View | None = None

    def files(self) -> list[discord.File]:
        return [upload.file() for upload in self.uploads]


class OperationCog(commands.Cog):
    """One operation's Discord side. Subclasses set `operation` and override what their jobs need."""

    operation: ClassVar[Operation]
    shows_previews: ClassVar[bool] = False  # progress edits attach the worker's preview picture
    stages: ClassVar[dict[str, str]] = {}  # the worker's stage names → the words a member reads

    def __init__(self, bot: EDalleBot) -> None:
        self.bot = bot

    def describe(self, job: Job) -> str:
        """The first line of every message about this job: what it is."""
        return f'{self.operation.title} · job #{job.id}'

    async def result_message(self, job: Job) -> Outgoing:
        """The message a succeeded job becomes (also what `.job` posts again)."""
        picture = picture_of(job.result, 0)
        if picture is None:
            raise FileNotFoundError(f'job {job.id} has no picture in its result')
        upload = await self.load(job, picture, f'job-{job.id}-{self.operation.name}.png')
        text = render.done(job, self.describe(job), picture) + reencoded_note(upload)
        return Outgoing(text, [upload], picture_view(self.bot, job, picture))

    def picture_caption(self, job: Job, picture: Picture) -> str:
        """How a picture of this operation's result is named when posted alone."""
        return f'picture {picture.index + 1} of job #{job.id}'

    def picture_controls(self, job: Job, picture: Picture) -> list[discord.ui.Item[Any]]:
        """The components this operation puts under any picture posted alone (`picture_view` lays them out)."""
        return []

    def picture_hint(self, job: Job, picture: Picture) -> str | None:
        """One line saying what this operation's controls under that picture do (None: it offers none)."""
        return None

    def info_details(self, job: Job) -> list[str]:
        """ℹ️ lines about this job beyond the prompt and the picture's own facts (its settings)."""
        return []

    async def fetch_files(self, job: Job) -> None:
        """A succeeded job's files into the data dir: the worker may be on another host (the result store)."""
        if job.status is JobStatus.SUCCEEDED:
            await materialize(self.bot.results, self.bot.settings.data_dir, job.id)

    async def load(self, job: Job, picture: Picture, filename: str) -> Upload:
        """A picture of `job` as an upload under the channel's limit."""
        await self.fetch_files(job)
        guild = self.bot.get_guild(job.guild_id) if job.guild_id else None
        limit = upload_limit(guild, self.bot.settings.max_upload_bytes)
        return await load_upload(picture_path(self.bot.settings.data_dir, job, picture), limit, filename)


def operation_cog(bot: commands.Bot, kind: str) -> OperationCog | None:
    """The loaded cog of the operation of `kind`, or None (an unknown kind, or its module is not loaded)."""
    for cog in bot.cogs.values():
        if isinstance(cog, OperationCog) and cog.operation.name == kind:
            return cog
    return None


def operation_cogs(bot: commands.Bot) -> list[OperationCog]:
    """The loaded operation cogs, in the registry's order (which orders their controls under a picture)."""
    found = [operation_cog(bot, operation.name) for operation in operations.OPERATIONS]
    return [cog for cog in found if cog is not None]


def describe(bot: commands.Bot, job: Job) -> str:
    cog = operation_cog(bot, job.kind)
    return cog.describe(job) if cog is not None else f'{job.kind} · job #{job.id}'


def progress_text(bot: commands.Bot, job: Job, ahead: int | None) -> str:
    cog = operation_cog(bot, job.kind)
    operation = operations.get(job.kind)
    run_seconds = operation.estimate_seconds(job.payload or {}) if operation is not None else None
    return render.progress(job, describe(bot, job), ahead, cog.stages if cog is not None else None, run_seconds)


def picture_view(bot: commands.Bot, job: Job, picture: Picture) -> discord.ui.View:
    """Every operation's controls for a picture, then 🎞️ (where its job recorded a time-lapse) and ℹ️: buttons five
    to a row, each select on a row of its own."""
    items = [item for cog in operation_cogs(bot) for item in cog.picture_controls(job, picture)]
    buttons = [item for item in items if _is_button(item)]
    others = [item for item in items if not _is_button(item)]
    if TIMELAPSE in media_of(job.result):
        buttons.append(TimelapseButton(job.id))
    buttons.append(InfoButton(job.id, picture.index))
    rows: list[list[discord.ui.Item[Any]]] = [
        buttons[i : i + BUTTONS_PER_ROW] for i in range(0, len(buttons), BUTTONS_PER_ROW)
    ]
    rows += [[item] for item in others]
    if len(rows) > ROWS_PER_MESSAGE:
        raise ValueError(f'{len(rows)} rows of controls for one picture; Discord allows {ROWS_PER_MESSAGE}')
    for number, row in enumerate(rows):
        for item in row:
            item.row = number
    return make_view(*[item for row in rows for item in row])


def components_of(message: discord.Message) -> list[str]:
    return [getattr(c, 'custom_id', None) or '' for row in message.components for c in getattr(row, 'children', [])]


def picture_in(custom_ids: list[str]) -> tuple[int, int] | None:
    """The (job id, picture index) one of the bot's messages shows, read from its components: a picture posted
    alone carries ℹ️ for it; a result of several (a grid) means its first, best picture. None for a message
    about no finished picture (a status message carries only ✖)."""
    target = picture_target(custom_ids)
    if target is not None:
        return target
    for custom_id in custom_ids:
        parsed = parse(custom_id)
        if parsed is not None and parsed[0] != 'cancel' and 'job_id' in parsed[1].groupdict():
            return int(parsed[1]['job_id']), 0
    return None


async def replied_message(bot: commands.Bot, message: discord.Message) -> discord.Message | None:
    """The message a text command replies to (fetched when Discord did not include it), or None."""
    reference = message.reference
    if reference is None or reference.message_id is None:
        return None
    if isinstance(reference.resolved, discord.Message):
        return reference.resolved
    try:
        return await message.channel.fetch_message(reference.message_id)
    except discord.HTTPException:
        return None


def _is_button(item: discord.ui.Item[Any]) -> bool:
    inner = item.item if isinstance(item, discord.ui.DynamicItem) else item
    return isinstance(inner, discord.ui.Button)


async def post_picture(
    bot: EDalleBot, channel: discord.abc.Messageable, job: Job, index: int, *, nonce: str
) -> discord.Message:
    """Picture `index` of a succeeded job alone, with every next step's controls, as a channel message (DM if refused)."""
    cog = operation_cog(bot, job.kind)
    picture = picture_of(job.result, index) if job.status is JobStatus.SUCCEEDED else None
    if cog is None or picture is None:
        raise NoSuchPicture(f'Job #{job.id} has no picture {index + 1} (yet).')
    upload = await cog.load(job, picture, f'job-{job.id}-{index + 1}.png')
    hints = [hint for other in operation_cogs(bot) if (hint := other.picture_hint(job, picture))]
    content = render.picture(job, picture, cog.picture_caption(job, picture), hints)
    view = picture_view(bot, job, picture)
    try:
        return await channel.send(content, file=upload.file(), view=view, nonce=nonce)
    except discord.Forbidden:
        user = bot.get_user(job.user_id) or await bot.fetch_user(job.user_id)
        return await user.send(content, file=upload.file(), view=view)


async def lineage_text(store: JobStore, job: Job, index: int) -> str:
    """Where picture `index` of `job` came from, oldest first: `imagine #12 → pick 3 → expand 16:9 #15`. A step
    names the picture taken from a result of several (`pick 3`); a member's upload starts the chain by its name."""
    try:
        chain = await store.lineage(job.id)
    except JobNotFound:
        chain = [job]
    steps: list[str] = []
    first = chain[0]
    if first.parent_job_id is None and (first.payload or {}).get('source_name'):
        steps.append(f'your image {render.quoted(str(first.payload["source_name"]), 80)}')
    for current, following in zip(chain, [*chain[1:], None], strict=True):
        operation = operations.get(current.kind)
        steps.append(f'{operation.label(current.payload or {}) if operation else current.kind} #{current.id}')
        picked = following.parent_index if following is not None else index
        if len(pictures_of(current.result)) > 1 and picked is not None:
            steps.append(f'pick {picked + 1}')
    return ' → '.join(steps)


def reencoded_note(upload: Upload) -> str:
    """What the member got instead of the file as it was (a JPEG, fewer frames …), as a line of its own."""
    return f'\n({upload.note})' if upload.reencoded and upload.note else ''
