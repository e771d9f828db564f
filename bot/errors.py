"""The bot's own user-facing errors, and the one way every failure reaches a member.

Domain errors (`edalle.errors.EdalleError` and the ones below) carry a sentence written for the member:
it is sent as is, ephemerally where Discord allows. Anything else is a bug or an outage: it is logged
with its traceback under a short error id, and the member gets only that id ("something went wrong,
error `3f9a1c2e`"), so an admin can find the log line. No traceback, token or URL ever reaches Discord.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable

import discord
from discord.ext import commands

from edalle.errors import EdalleError, PromptRejected

log = logging.getLogger(__name__)

MAX_REPLY_CHARS = 1900  # under Discord's 2000, with room for a mention


class BlockedWord(PromptRejected):
    """That prompt contains a word this server has blocked."""

    def __init__(self, word: str) -> None:
        self.word = word
        super().__init__(f'Your prompt contains the blocked word “{word}”. Remove it and try again.')


class BadRatio(EdalleError):
    """That is not a ratio I can expand to."""


class NothingToExpand(EdalleError):
    """Reply to one of my pictures, or attach an image, to expand it."""

    def __init__(self) -> None:
        super().__init__(
            'There is nothing to expand: reply to one of my pictures (a picked candidate or a grid) with `.expand`, '
            'or attach an image to the command.'
        )


class NotAnImage(EdalleError):
    """That attachment is not an image I can read."""


class MissingChannelPermissions(EdalleError):
    """I am missing permissions in this channel."""

    def __init__(self, channel: str, missing: Iterable[str]) -> None:
        self.missing = list(missing)
        listed = ', '.join(self.missing)
        super().__init__(
            f'I am missing permissions in {channel}: {listed}. Ask a server admin to grant them to my role, '
            'or use me in another channel.'
        )


class NotAdmin(EdalleError, commands.CheckFailure):
    """Only this server's bot admins can do that (Manage Server permission, or the bot admin role)."""


class NotYourButton(EdalleError):
    """These buttons belong to someone else."""

    def __init__(self, owner_id: int) -> None:
        self.owner_id = owner_id
        super().__init__(f'These buttons belong to <@{owner_id}>. Start your own with `/imagine`.')


class GuildOnly(EdalleError, commands.CheckFailure):
    """That only works in a server, not in direct messages."""


class NotReady(EdalleError):
    """I am still starting up. Try again in a few seconds."""


def new_error_id() -> str:
    return secrets.token_hex(4)


_SECRETS = [
    re.compile(r'[MNO][A-Za-z\d_-]{23,27}\.[A-Za-z\d_-]{6}\.[A-Za-z\d_-]{27,40}'),  # a bot token
    re.compile(r'https?://\S*/(webhooks|interactions)/\S+'),  # interaction and webhook tokens live in URLs
]


def redact(text: str) -> str:
    """Belt and braces: no token-shaped string or token URL leaves the bot, whatever the message."""
    for pattern in _SECRETS:
        text = pattern.sub('<redacted>', text)
    return text


_WRAPPERS = (commands.CommandInvokeError, commands.HybridCommandError, discord.app_commands.CommandInvokeError)


def unwrap(error: BaseException) -> BaseException:
    """The real cause behind discord.py's wrappers (CommandInvokeError, HybridCommandError, …).

    Checks raise our errors as `CheckFailure` subclasses (discord.py only routes `CommandError`s to the
    error handlers), so `NotAdmin` arrives either bare or wrapped.
    """
    while isinstance(error, _WRAPPERS):
        error = error.original
    return error


def user_message(error: BaseException, *, context: str) -> str:
    """What the member reads for `error`; unexpected errors are logged here, with an id."""
    error = unwrap(error)
    if isinstance(error, EdalleError):
        return redact(error.user_message)[:MAX_REPLY_CHARS]
    if isinstance(error, discord.Forbidden):
        error_id = new_error_id()
        log.warning('error %s: forbidden while %s: %s', error_id, context, error)
        return f'Discord refused me a permission I need here (error `{error_id}`). Ask a server admin to check my role.'
    error_id = new_error_id()
    log.error('error %s while %s', error_id, context, exc_info=error)
    return f'Something went wrong on my side (error `{error_id}`). Please try again; if it keeps happening, tell an admin.'


async def reply_to_interaction(interaction: discord.Interaction, text: str) -> None:
    """An ephemeral answer, whether or not the interaction was already answered or deferred."""
    try:
        if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
            await interaction.edit_original_response(content=text)  # replaces the "thinking…" placeholder
        elif interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as exc:  # the interaction expired (15 min) or Discord is down: nothing else to do
        log.warning('could not answer interaction %s: %s', interaction.id, exc)


async def report_interaction_error(interaction: discord.Interaction, error: BaseException, *, context: str) -> None:
    await reply_to_interaction(interaction, user_message(error, context=context))


async def send_note(channel: discord.abc.Messageable, user: discord.abc.User, text: str) -> None:
    """A reaction has no interaction to answer privately: mention the member in the channel, briefly."""
    try:
        await channel.send(f'{user.mention} {text}', delete_after=60, allowed_mentions=discord.AllowedMentions(users=[user]))
    except discord.HTTPException:
        pass
