"""Which picture a command starts from, and what the bot knows of it before queueing (its size, its prompt).

Every picture-taking command (`.expand`, `.zoom`, `.pan`, `.dream` as a reply, their buttons and selects) means
one of: a picture of a finished job (a candidate, a widened, zoomed or dreamed picture …), or a member's own
picture, attached to the command or to the message it replies to. Which one, when a command could mean several
(`TARGET_ORDER`): an image attached to the command itself wins, since attaching it is the most explicit thing a
member can do; then the replied-to message: one of the bot's pictures means that very picture (a grid means its
best candidate), any other message means its first image attachment.

`choose` turns that into a `Chosen` source: for a job's picture, after checking it is the member's own (admins
excepted), its size and prompt from the job's result; for an attachment, after downloading, checking and storing
it (`bot.uploads`), its stored path and size. The size lets an operation check its canvas against the admins'
limit before anything is queued; `submit_from` discards a stored upload again when the request is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from bot.admission import Post, submit
from bot.operations import components_of, picture_in, replied_message
from bot.uploads import discard_upload, store_upload
from bot.utils import render
from bot.utils.checks import require_owner
from bot.utils.images import looks_like_image
from bot.utils.results import prompt_of
from edalle.errors import EdalleError, InvalidParent
from edalle.jobs import Admission, Job, JobRequest, JobStatus
from edalle.operations.base import Picture, picture_of, pictures_of

if TYPE_CHECKING:
    from bot.bot import EDalleBot

TARGET_ORDER = (
    'Which picture: an image attached to the command wins; otherwise the message you reply to '
    '(one of my pictures, or any message with an image attached).'
)


@dataclass(frozen=True)
class Target:
    """What a command means: picture `index` of job `job_id`, or a member's `attachment`."""

    job_id: int | None = None
    index: int = 0
    attachment: discord.Attachment | None = None


@dataclass(frozen=True)
class Chosen:
    """A source ready for a request: a job's picture or a stored upload, its size and its prompt ('' for an upload)."""

    width: int
    height: int
    prompt: str = ''
    job_id: int | None = None
    index: int | None = None
    upload_path: str | None = None
    upload_name: str | None = None
    admin: bool = False  # chosen by an admin from someone else's job
    stored: bool = False  # an upload stored for this request (removed again if the request is refused)

    def fields(self) -> dict[str, Any]:
        """The keyword arguments of an operation's `request` that say where it starts."""
        if self.upload_path is not None:
            located: dict[str, Any] = {'source_path': self.upload_path, 'source_name': self.upload_name}
        else:
            located = {'parent_job_id': self.job_id, 'parent_index': self.index, 'admin': self.admin}
        return {**located, 'width': self.width, 'height': self.height}


async def find_target(bot: EDalleBot, message: discord.Message, nothing: Callable[[], EdalleError]) -> Target:
    """The picture a text command means, in `TARGET_ORDER`; `nothing()` is raised when it means none."""
    target = await optional_target(bot, message)
    if target is None:
        raise nothing()
    return target


async def optional_target(bot: EDalleBot, message: discord.Message) -> Target | None:
    """The picture a text command means, in `TARGET_ORDER`, or None (for a command that may start from nothing)."""
    attached = first_image(message.attachments)
    if attached is not None:
        return Target(attachment=attached)
    referenced = await replied_message(bot, message)
    if referenced is None:
        return None
    if bot.user is not None and referenced.author.id == bot.user.id:
        found = picture_in(components_of(referenced))
        if found is not None:
            return Target(job_id=found[0], index=found[1])
    attached = first_image(referenced.attachments)
    return Target(attachment=attached) if attached is not None else None


async def slash_target(
    bot: EDalleBot,
    user_id: int,
    job: int | None,
    picture: int,
    image: discord.Attachment | None,
    nothing: Callable[[], EdalleError],
    usable: Callable[[Picture], bool] = lambda picture: True,
) -> Target:
    """What a slash command's `job`, `picture` (1-based) and `image` options mean: the image wins; without a job, the
    member's latest finished job with a picture the operation can use."""
    if image is not None:
        return Target(attachment=image)
    if job is None:
        mine = await bot.store.user_jobs(user_id, active_only=False, limit=20)
        finished = [j for j in mine if j.status is JobStatus.SUCCEEDED and any(map(usable, pictures_of(j.result)))]
        if not finished:
            raise nothing()
        job = finished[0].id
    return Target(job_id=job, index=picture - 1)


def source_words(job: Job) -> str:
    """Where a job started, for its messages: 'job #12, picture 3', or the member's image by its file name."""
    if job.parent_job_id is not None:
        return f'job #{job.parent_job_id}, picture {(job.parent_index or 0) + 1}'
    name = (job.payload or {}).get('source_name')
    return f'your image {render.quoted(str(name), 80)}' if name else 'your image'


async def job_picture(
    bot: EDalleBot, user: discord.abc.User, guild: discord.Guild | None, job_id: int, index: int
) -> Chosen:
    """Picture `index` of job `job_id` as a source: the member's own (or an admin's choice), finished, with its size."""
    parent = await bot.store.get(job_id)
    admin = await require_owner(bot, user, guild, parent)
    if parent.status is not JobStatus.SUCCEEDED:
        raise InvalidParent(f'Job #{job_id} has no finished pictures to start from.')
    picture = picture_of(parent.result, index)
    if picture is None:
        raise InvalidParent(f'Job #{job_id} has no picture {index + 1}.')
    return Chosen(picture.width, picture.height, prompt_of(parent), job_id=job_id, index=index, admin=admin)


async def choose(
    bot: EDalleBot, user: discord.abc.User, guild: discord.Guild | None, target: Target, key: str, *, fit: str = 'shape'
) -> Chosen:
    """The source `target` means: a job's picture (checked) or an attachment (downloaded, checked, fitted as `fit`
    says (`bot.uploads.FITS`) and stored under `key`)."""
    if target.job_id is not None:
        return await job_picture(bot, user, guild, target.job_id, target.index)
    assert target.attachment is not None
    stored = await store_upload(bot, target.attachment, key, fit=fit)
    return Chosen(stored.width, stored.height, upload_path=stored.path, upload_name=stored.name, stored=True)


async def submit_from(bot: EDalleBot, chosen: Chosen | None, request: JobRequest, post: Post) -> Admission:
    """`submit`, and a refused request leaves nothing behind: an upload stored for it is removed again."""
    try:
        return await submit(bot, request, post)
    except EdalleError:
        if chosen is not None and chosen.stored and chosen.upload_path is not None:
            await discard_upload(bot, chosen.upload_path)
        raise


def first_image(attachments: list[discord.Attachment]) -> discord.Attachment | None:
    """The first attachment that looks like an image, else the first one at all: a text file is then refused
    with the checker's words (what to send instead) rather than a vague "nothing to start from"."""
    if not attachments:
        return None
    return next((a for a in attachments if looks_like_image(a)), attachments[0])


def channel_post(channel: discord.abc.Messageable) -> Post:
    """How a status message is posted for a command answered in `channel`."""

    async def post(content: str, view: discord.ui.View) -> discord.Message:
        return await channel.send(content, view=view)

    return post
