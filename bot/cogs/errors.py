"""Errors, in one layer for every command: short replies for what a member can fix, an id for the rest.

Hybrid commands (text and slash alike) report here through `on_command_error`; component callbacks
go through `bot.utils.views.dispatch`, and pure app commands through `EDalleBot.on_app_command_error`.
All three end in `bot.errors.user_message`, which logs unexpected failures with an id.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.errors import MissingChannelPermissions, unwrap, user_message

if TYPE_CHECKING:
    from bot.bot import EDalleBot

log = logging.getLogger(__name__)


class Errors(commands.Cog):
    """Turns command errors into replies."""

    def __init__(self, bot: EDalleBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_command_error(self, ctx: commands.Context[EDalleBot], error: commands.CommandError) -> None:
        cause = unwrap(error)
        if isinstance(cause, commands.CommandNotFound):
            return
        if isinstance(cause, (commands.UserInputError, commands.BadArgument)):
            command = ctx.command
            usage = f'`{ctx.clean_prefix}{command.qualified_name} {command.signature}`' if command else ''
            text = f'{cause} Usage: {usage}' if usage else str(cause)
            if isinstance(cause, commands.MissingRequiredArgument):
                text = f'Missing `{cause.param.name}`. Usage: {usage}'
        elif isinstance(cause, commands.CheckFailure) and not str(cause):
            text = 'You are not allowed to use that command here.'
        else:
            name = ctx.command.qualified_name if ctx.command else '?'
            text = user_message(
                cause, context=f'{ctx.clean_prefix}{name} for user {ctx.author.id} in channel {ctx.channel.id}'
            )
        mute = isinstance(cause, MissingChannelPermissions) and {'View Channel', 'Send Messages'} & set(cause.missing)
        await self.reply(ctx, text, dm_first=bool(mute))

    async def reply(self, ctx: commands.Context[EDalleBot], text: str, *, dm_first: bool = False) -> None:
        """Ephemeral for slash commands; for text commands a reply (in a burst, a line of a message shared with the
        others: `bot.acknowledgements`; when the channel refuses us, a DM)."""
        try:
            if ctx.interaction is not None:
                await ctx.send(text, ephemeral=True)
                return
            if dm_first:
                await ctx.author.send(text)
                return
            # In a burst of commands in this channel, said in one message with the others' answers.
            await self.bot.acks.refusal(
                ctx.channel.id,
                ctx.guild.id if ctx.guild else None,
                ctx.author.id,
                text,
                lambda: ctx.reply(text, mention_author=False),
                foldable=True,
            )
        except discord.HTTPException as exc:
            try:
                await ctx.author.send(text)
            except discord.HTTPException:
                log.warning('could not tell user %s about an error (%s): %s', ctx.author.id, exc, text)


async def setup(bot: EDalleBot) -> None:
    await bot.add_cog(Errors(bot))
