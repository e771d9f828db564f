"""Turning a member's request into a job: the checks the bot makes, one `enqueue`, the status message.

Every way of starting a job (a command, a button or select, a reaction, a modal, of any operation) ends
here, so they all refuse the same things with the same words. The store checks bans,
channels, quotas, pending jobs, cooldowns and the queue cap inside the enqueue transaction; the bot
adds what only it can know (its own channel permissions) or say better (which blocked word, with
accents folded; a prompt cut to length). Each request carries a `request_key` made from the Discord
message or interaction id, so a command Discord delivers twice, or a retried click, never makes (or
charges) a second job.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.errors import MissingChannelPermissions
from bot.operations import describe
from bot.utils import render
from bot.utils.prompts import check_blocked, clean_prompt
from bot.utils.views import status_view
from edalle import operations
from edalle.errors import EdalleError
from edalle.jobs import Admission, GuildSettings, JobRequest, Limits
from edalle.operations.imagine import MAX_NEGATIVE_CHARS

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
    """The prompt as it will be queued, and whether it was cut. Its blocked words are checked by `fit`."""
    prompt, cut = clean_prompt(text or '', bot.settings.max_prompt_chars)
    if not prompt:
        raise EmptyPrompt()
    return prompt, cut


class EmptyNegative(EdalleError):
    """The negative prompt has nothing in it I can read: write the words to avoid, or leave it out."""


def clean_negative(bot: EDalleBot, text: str | None) -> str:
    """A negative prompt as it will be queued: '' for none; words with nothing readable are refused (not taken
    for none, so a member who meant something hears it). Its blocked words are checked by `fit`."""
    if not text or not text.strip():
        return ''
    negative, _ = clean_prompt(text, MAX_NEGATIVE_CHARS)
    if not negative:
        raise EmptyNegative()
    return negative


async def prepare_prompt(bot: EDalleBot, guild_id: int | None, text: str) -> tuple[str, bool]:
    """The prompt as it will be queued, and whether it was cut; raises `BlockedWord` naming the word."""
    prompt, cut = clean_imagine_prompt(bot, text)
    settings = await bot.store.get_settings(guild_id)
    check_blocked(prompt, settings.blocked_words)
    return prompt, cut


def request_key(ctx: commands.Context[EDalleBot]) -> str:
    """One job per Discord message or interaction, however often Discord (or a retry) delivers it."""
    return f'ia:{ctx.interaction.id}' if ctx.interaction else f'msg:{ctx.message.id}'


def fit(request: JobRequest, settings: GuildSettings, limits: Limits) -> JobRequest:
    """Inside `enqueue`, with the settings its transaction read: refuse a blocked word in any of the member's texts
    (naming it), and shape the payload to the limits (`Operation.fit`: no more candidates than allowed). Reading
    them here rather than before the enqueue saves a command two transactions (bench/RESULTS.md, bot under load);
    it runs on the store's thread, so it stays pure and quick. Every other payload key is kept as it was."""
    operation = operations.get(request.kind)
    if operation is None:
        return request
    for text in operation.texts(request.payload):
        check_blocked(text, settings.blocked_words)
    payload = operation.fit(request.payload, limits)
    if payload == request.payload:
        return request
    return replace(request, payload=payload, compat_key=operation.compat_key(payload))


async def submit(bot: EDalleBot, request: JobRequest, post: Post, *, cut: bool = False) -> Admission:
    """Enqueue (fitted to the guild's settings by `fit`), post the status message with `post`, and remember it so
    progress and the result land there. In a burst of text commands in one channel the job is acknowledged in
    a message shared with the others instead (`bot.acknowledgements`): it then has no status message, and its
    result comes as a new message."""
    admission = await bot.store.enqueue(request, fit=fit)
    job = admission.job
    if not admission.created:
        log.info('job %s: request %s seen before; not queued again', job.id, request.request_key)
        return admission
    log.info('job %s: %s queued for user %s (%d ahead)', job.id, job.kind, job.user_id, admission.position)
    operation = operations.get(job.kind)
    line = render.queued_line(admission, operation.title if operation is not None else job.kind)
    run_seconds = operation.estimate_seconds(job.payload or {}) if operation is not None else None
    content = render.queued(admission, describe(bot, job), cut=cut, run_seconds=run_seconds)
    try:
        message = await bot.acks.status(
            request.channel_id, request.guild_id, job.user_id, line, lambda: post(content, status_view(job.id))
        )
    except discord.HTTPException as exc:  # the job stands: its result will still be posted (or sent by DM)
        log.warning('job %s: could not post its status message: %s', job.id, exc)
        return admission
    if message is None:
        log.info('job %s: acknowledged in a message shared with others (no status message)', job.id)
        return admission
    await bot.store.set_status_message(job.id, message.id)
    return admission
