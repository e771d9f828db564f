"""Turning a member's request into a job: the checks the bot makes, one `enqueue`, the status message.

Every way of starting a job (`.imagine`, `/imagine`, 🔄, a ratio button or select, a ↔️ reaction,
`.expand`) ends here, so they all refuse the same things with the same words. The store checks bans,
channels, quotas, pending jobs, cooldowns and the queue cap inside the enqueue transaction; the bot
adds what only it can know (its own channel permissions) or say better (which blocked word, with
accents folded; a prompt cut to length). Each request carries a `request_key` made from the Discord
message or interaction id, so a command Discord delivers twice, or a retried click, never makes (or
charges) a second job.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord

from bot.errors import MissingChannelPermissions
from bot.utils import render
from bot.utils.prompts import check_blocked, clean_prompt
from bot.utils.views import status_view
from edalle.errors import EdalleError
from edalle.jobs import Admission, GuildSettings, JobRequest, Limits
from edalle.jobs.store import FitRequest

if TYPE_CHECKING:
    from bot.bot import EDalleBot

log = logging.getLogger(__name__)

#: permission attribute → the name members see in Discord's settings
REQUIRED_PERMISSIONS = {
    'view_channel': 'View Channel',
    'send_messages': 'Send Messages',
    'attach_files': 'Attach Files',
    'read_message_history': 'Read Message History',
}

Post = Callable[[str, discord.ui.View], Awaitable[discord.Message]]


class EmptyPrompt(EdalleError):
    """Tell me what to draw, for example `.imagine a lighthouse in a storm, oil painting`."""


def check_channel_permissions(channel: discord.abc.Messageable | None) -> None:
    """Refuse up front, listing what is missing, rather than make a job whose result cannot be posted."""
    guild = getattr(channel, 'guild', None)
    if guild is None or channel is None or isinstance(channel, discord.PartialMessageable):
        return  # a DM (nothing to grant), or a channel not in the cache (its permissions are unknown)
    perms = channel.permissions_for(guild.me)  # type: ignore[union-attr]
    missing = [name for attr, name in REQUIRED_PERMISSIONS.items() if not getattr(perms, attr)]
    if isinstance(channel, discord.Thread) and perms.send_messages_in_threads and 'Send Messages' in missing:
        missing.remove('Send Messages')
    if missing:
        raise MissingChannelPermissions(getattr(channel, 'mention', 'this channel'), missing)


def clean_imagine_prompt(bot: EDalleBot, text: str) -> tuple[str, bool]:
    """The prompt as it will be queued, and whether it was cut. Its blocked words are checked by `fit_imagine`."""
    prompt, cut = clean_prompt(text or '', bot.settings.max_prompt_chars)
    if not prompt:
        raise EmptyPrompt()
    return prompt, cut


async def prepare_prompt(bot: EDalleBot, guild_id: int | None, text: str) -> tuple[str, bool]:
    """The prompt as it will be queued, and whether it was cut; raises `BlockedWord` naming the word."""
    prompt, cut = clean_imagine_prompt(bot, text)
    settings = await bot.store.get_settings(guild_id)
    check_blocked(prompt, settings.blocked_words)
    return prompt, cut


def imagine_request(
    bot: EDalleBot, *, user_id: int, guild_id: int | None, channel_id: int | None, prompt: str, request_key: str
) -> JobRequest:
    """A draft for nine candidates: submit it with `fit=fit_imagine`, which applies the guild's settings."""
    return JobRequest.imagine(
        user_id=user_id,
        guild_id=guild_id,
        channel_id=channel_id,
        prompt=prompt,
        n=9,
        preset=bot.settings.preset,
        request_key=request_key,
    )


def fit_imagine(request: JobRequest, settings: GuildSettings, limits: Limits) -> JobRequest:
    """Inside `enqueue`, with the settings its transaction read: refuse a blocked word (naming it), and ask
    for no more candidates than allowed. Reading them here rather than before the enqueue saves an
    `.imagine` two transactions (bench/RESULTS.md, bot under load); it runs on the store's thread, so it
    stays pure and quick."""
    payload = request.payload
    check_blocked(str(payload['prompt']), settings.blocked_words)
    n = min(int(payload.get('n') or 9), limits.candidates_per_imagine)
    if n == payload.get('n'):
        return request
    return JobRequest.imagine(
        user_id=request.user_id,
        guild_id=request.guild_id,
        channel_id=request.channel_id,
        prompt=str(payload['prompt']),
        n=n,
        seed=payload.get('seed'),
        preset=str(payload['preset']),
        request_key=request.request_key,
        priority=request.priority,
    )


async def expand_request(
    bot: EDalleBot,
    *,
    user_id: int,
    guild_id: int | None,
    channel_id: int | None,
    parent_job_id: int,
    parent_index: int,
    ratio: str,
    prompt: str | None,
    request_key: str,
) -> JobRequest:
    limits = await bot.store.get_limits(guild_id, user_id)
    return JobRequest.expand(
        user_id=user_id,
        guild_id=guild_id,
        channel_id=channel_id,
        parent_job_id=parent_job_id,
        parent_index=parent_index,
        prompt=prompt,
        ratio=ratio,
        steps=limits.expand_steps,  # the admins' limit is also what is asked for
        preset=bot.settings.preset,
        request_key=request_key,
    )


async def expand_upload_request(
    bot: EDalleBot,
    *,
    user_id: int,
    guild_id: int | None,
    channel_id: int | None,
    source_path: str,
    source_name: str | None,
    ratio: str,
    prompt: str | None,
    request_key: str,
) -> JobRequest:
    """Like `expand_request`, for a member's own picture already stored at `source_path` (see `bot.uploads`)."""
    limits = await bot.store.get_limits(guild_id, user_id)
    return JobRequest.expand_upload(
        user_id=user_id,
        guild_id=guild_id,
        channel_id=channel_id,
        source_path=source_path,
        source_name=source_name,
        prompt=prompt,
        ratio=ratio,
        steps=limits.expand_steps,
        preset=bot.settings.preset,
        request_key=request_key,
    )


async def submit(
    bot: EDalleBot, request: JobRequest, post: Post, *, cut: bool = False, fit: FitRequest | None = None
) -> Admission:
    """Enqueue (`fit`: see `JobStore.enqueue`), post the status message with `post`, and remember it so
    progress and the result land there."""
    admission = await bot.store.enqueue(request, fit=fit)
    job = admission.job
    if not admission.created:
        log.info('job %s: request %s seen before; not queued again', job.id, request.request_key)
        return admission
    log.info('job %s: %s queued for user %s (%d ahead)', job.id, job.kind, job.user_id, admission.position)
    try:
        message = await post(render.queued(admission, cut=cut), status_view(job.id))
    except discord.HTTPException as exc:  # the job stands: its result will still be posted (or sent by DM)
        log.warning('job %s: could not post its status message: %s', job.id, exc)
        return admission
    await bot.store.set_status_message(job.id, message.id)
    return admission
