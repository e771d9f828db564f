"""Who may do what: bot admins and job owners.

A bot admin is a member with the Manage Server (or Administrator) permission, or the role a server's
admins set with `.admin role`. Checks raise typed errors carrying the sentence the member reads, so a
refusal is one short (ephemeral where possible) reply and nothing changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.errors import GuildOnly, NotAdmin, NotYourButton

if TYPE_CHECKING:
    from bot.host import BotHost
    from edalle.jobs import Job


async def is_bot_admin(bot: BotHost, user: discord.abc.User, guild: discord.Guild | None) -> bool:
    if guild is None or not isinstance(user, discord.Member):
        return False
    perms = user.guild_permissions
    if perms.manage_guild or perms.administrator or guild.owner_id == user.id:
        return True
    settings = await bot.store.get_settings(guild.id)
    return settings.admin_role_id is not None and any(role.id == settings.admin_role_id for role in user.roles)


def bot_admin() -> Any:
    """Decorator: the command is for bot admins, in a server."""

    async def predicate(ctx: commands.Context[Any]) -> bool:
        if ctx.guild is None:
            raise GuildOnly()
        if not await is_bot_admin(ctx.bot, ctx.author, ctx.guild):
            raise NotAdmin()
        return True

    return commands.check(predicate)


async def require_owner(bot: BotHost, user: discord.abc.User, guild: discord.Guild | None, job: Job) -> bool:
    """Pass for the job's requester and for admins (returns whether the user is an admin); raise otherwise."""
    if user.id == job.user_id:
        return False
    if await is_bot_admin(bot, user, guild):
        return True
    raise NotYourButton(job.user_id)
