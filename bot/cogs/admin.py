"""`.admin …` / `/admin …`: limits, per-user overrides, bans, blocked words, allowed channels, the admin role.

Every command in this cog is for bot admins (`cog_check`: Manage Server, or the role set with
`.admin role`); anyone else gets one refusal and nothing changes. A bot admin keeps them even when banned
(`admins_only`, read by `bot.guard`), so a ban can always be lifted. Every change goes through a store
verb that writes the audit log in the same transaction, so `.admin log` shows who changed what.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import GuildOnly, NotAdmin
from bot.utils.checks import is_bot_admin
from edalle import operations
from edalle.errors import InvalidSetting
from edalle.jobs import Limits
from edalle.jobs.limits import SETTING_ALIASES, SETTING_SPECS, canonical_key

if TYPE_CHECKING:
    from bot.bot import EDalleBot

LIMIT_KEYS = [key for key, spec in SETTING_SPECS.items() if spec.is_limit]
RESET_WORDS = {'default', 'reset', 'none', 'off'}
NO_PINGS = discord.AllowedMentions.none()
#: every limit, then the old names still accepted (`daily_expands`); Discord shows them as the choices of /admin set
LimitKey = Literal[tuple([*LIMIT_KEYS, *SETTING_ALIASES])]  # type: ignore[valid-type]
OPERATION_CHOICES = [app_commands.Choice(name=operation.title, value=operation.name) for operation in operations.OPERATIONS]


def _value(text: str) -> Any:
    return None if text.strip().lower() in RESET_WORDS else text.strip()


def _words(text: str) -> list[str]:
    return [w.strip() for w in re.split(r'[,\n]+' if ',' in text else r'\s+', text) if w.strip()]


class Admin(commands.Cog):
    """Server settings for bot admins."""

    admins_only = True  # the guard lets a bot admin use these even if banned (bot.guard)

    def __init__(self, bot: EDalleBot) -> None:
        self.bot = bot

    async def cog_check(self, ctx: commands.Context[EDalleBot]) -> bool:  # type: ignore[override]
        if ctx.guild is None:
            raise GuildOnly()
        if not await is_bot_admin(self.bot, ctx.author, ctx.guild):
            raise NotAdmin()
        return True

    async def _set(self, ctx: commands.Context[EDalleBot], key: str, value: Any, reason: str | None = None) -> None:
        assert ctx.guild is not None
        await self.bot.store.set_setting(ctx.guild.id, key, value, actor_id=ctx.author.id, reason=reason)

    @commands.hybrid_group(name='admin', fallback='show')
    # /admin is listed only for members who can manage the server, and never in DMs; a server can widen
    # that in Server Settings → Integrations (e.g. for the `.admin role`). The cog check still decides.
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    async def admin(self, ctx: commands.Context[EDalleBot]) -> None:
        """Show this server's limits and settings."""
        assert ctx.guild is not None
        settings = await self.bot.store.get_settings(ctx.guild.id)
        defaults = Limits()
        lines = [f'**Limits for {discord.utils.escape_markdown(ctx.guild.name)}** (`.admin set <name> <value|default>`)']
        for key in LIMIT_KEYS:
            value, default = getattr(settings.limits, key), getattr(defaults, key)
            lines.append(f'• `{key}`: {value:g}' + ('' if value == default else f' (default {default:g})'))
        words = ', '.join(f'`{w}`' for w in settings.blocked_words) or 'none'
        channels = ', '.join(f'<#{c}>' for c in settings.allowed_channel_ids) or 'every channel'
        role = f'<@&{settings.admin_role_id}>' if settings.admin_role_id else 'none (Manage Server only)'
        off = ', '.join(f'`{name}`' for name in settings.disabled_operations) or 'none'
        lines += [f'Blocked words: {words}', f'Allowed channels: {channels}', f'Admin role: {role}', f'Switched off: {off}']
        await ctx.send('\n'.join(lines), ephemeral=True, allowed_mentions=NO_PINGS)

    @admin.command(name='set')
    @app_commands.describe(key='Which limit', value='A number, or "default"')
    async def set_limit(self, ctx: commands.Context[EDalleBot], key: LimitKey, value: str) -> None:
        """Set a limit for everyone in this server."""
        await self._set(ctx, key, _value(value))
        await ctx.send(f'`{canonical_key(key)}` is now {value.strip()} in this server.', ephemeral=True)

    @admin.command(name='user')
    @app_commands.describe(member='Whose limit', key='Which limit', value='A number, or "default"')
    async def user_limit(self, ctx: commands.Context[EDalleBot], member: discord.Member, key: LimitKey, value: str) -> None:
        """Set one member's own limit (overrides the server's)."""
        assert ctx.guild is not None
        await self.bot.store.set_override(ctx.guild.id, member.id, key, _value(value), actor_id=ctx.author.id)
        await ctx.send(
            f'`{canonical_key(key)}` for {member.mention} is now {value.strip()}.', ephemeral=True, allowed_mentions=NO_PINGS
        )

    @admin.command(name='op')
    @app_commands.describe(action='Switch the operation on or off in this server', operation='Which operation')
    @app_commands.choices(operation=OPERATION_CHOICES)
    async def op(self, ctx: commands.Context[EDalleBot], action: Literal['enable', 'disable'], operation: str) -> None:
        """Switch an operation (imagine, expand, …) off or on again in this server; audited."""
        assert ctx.guild is not None
        name = operation.strip().lower()
        if operations.get(name) is None:
            known = ', '.join(f'`{n}`' for n in operations.names())
            raise InvalidSetting(f'There is no operation called `{name}`. Known: {known}.')
        current = set((await self.bot.store.get_settings(ctx.guild.id)).disabled_operations)
        wanted = current | {name} if action == 'disable' else current - {name}
        await self._set(ctx, 'disabled_operations', sorted(wanted) or None)
        state = 'switched off' if action == 'disable' else 'switched on'
        await ctx.send(f'`{name}` is now {state} in this server.', ephemeral=True)

    @admin.command(name='ban')
    @app_commands.describe(member='Who may no longer use the image commands', reason='Shown to them')
    async def ban(self, ctx: commands.Context[EDalleBot], member: discord.Member, *, reason: str | None = None) -> None:
        """Stop a member from using the image commands here."""
        assert ctx.guild is not None
        await self.bot.store.ban(ctx.guild.id, member.id, actor_id=ctx.author.id, reason=reason)
        self.bot.guard.forget(ctx.guild.id, member.id)  # at once, not when the cached answer expires
        await ctx.send(
            f'{member.mention} can no longer use the image commands here.', ephemeral=True, allowed_mentions=NO_PINGS
        )

    @admin.command(name='unban')
    async def unban(self, ctx: commands.Context[EDalleBot], member: discord.Member) -> None:
        """Let a banned member use the image commands again."""
        assert ctx.guild is not None
        lifted = await self.bot.store.unban(ctx.guild.id, member.id, actor_id=ctx.author.id)
        self.bot.guard.forget(ctx.guild.id, member.id)
        text = f'{member.mention} may use the image commands again.' if lifted else f'{member.mention} was not banned.'
        await ctx.send(text, ephemeral=True, allowed_mentions=NO_PINGS)

    @admin.command(name='block')
    @app_commands.describe(words='Words to block, separated by spaces or commas')
    async def block(self, ctx: commands.Context[EDalleBot], *, words: str) -> None:
        """Block words in prompts (whole words; case and accents ignored)."""
        assert ctx.guild is not None
        current = set((await self.bot.store.get_settings(ctx.guild.id)).blocked_words)
        added = [w.lower() for w in _words(words)]
        await self._set(ctx, 'blocked_words', sorted(current | set(added)))
        await ctx.send(f'Blocked: {", ".join(f"`{w}`" for w in added)}.', ephemeral=True)

    @admin.command(name='unblock')
    @app_commands.describe(words='Words to allow again')
    async def unblock(self, ctx: commands.Context[EDalleBot], *, words: str) -> None:
        """Allow blocked words again."""
        assert ctx.guild is not None
        current = set((await self.bot.store.get_settings(ctx.guild.id)).blocked_words)
        removed = {w.lower() for w in _words(words)}
        await self._set(ctx, 'blocked_words', sorted(current - removed))
        await ctx.send(
            f'No longer blocked: {", ".join(f"`{w}`" for w in sorted(removed & current)) or "nothing"}.', ephemeral=True
        )

    @admin.command(name='channel')
    @app_commands.describe(action='add or remove a channel, or clear the list (then every channel is allowed)')
    async def channel(
        self,
        ctx: commands.Context[EDalleBot],
        action: Literal['add', 'remove', 'clear'],
        channel: discord.TextChannel | None = None,
    ) -> None:
        """Limit the image commands to some channels (an empty list allows every channel)."""
        assert ctx.guild is not None
        current = set((await self.bot.store.get_settings(ctx.guild.id)).allowed_channel_ids)
        if action != 'clear' and channel is None:
            raise InvalidSetting(f'Name the channel: `{ctx.clean_prefix}admin channel {action} #channel`.')
        if action == 'add':
            current.add(channel.id)  # type: ignore[union-attr]
        elif action == 'remove':
            current.discard(channel.id)  # type: ignore[union-attr]
        else:
            current.clear()
        await self._set(ctx, 'allowed_channel_ids', sorted(current) or None)
        listed = ', '.join(f'<#{c}>' for c in sorted(current)) or 'every channel'
        await ctx.send(f'Image commands are now allowed in: {listed}.', ephemeral=True)

    @admin.command(name='role')
    @app_commands.describe(role='Members with this role are bot admins (leave empty to clear)')
    async def role(self, ctx: commands.Context[EDalleBot], role: discord.Role | None = None) -> None:
        """Set the role whose members are bot admins (besides Manage Server)."""
        await self._set(ctx, 'admin_role_id', role.id if role else None)
        text = f'Members with {role.mention} are now bot admins.' if role else 'No admin role: only Manage Server counts.'
        await ctx.send(text, ephemeral=True, allowed_mentions=NO_PINGS)

    @admin.command(name='log')
    async def log(self, ctx: commands.Context[EDalleBot]) -> None:
        """The last changes to this server's settings, newest first."""
        assert ctx.guild is not None
        entries = await self.bot.store.audit_log(ctx.guild.id, limit=15)
        lines = ['**Recent admin changes**'] if entries else ['No admin changes yet.']
        for e in entries:
            target = f' <@{e.target_user_id}>' if e.target_user_id else ''
            key = f' `{e.key}`' if e.key else ''
            lines.append(
                f'• <t:{int(e.created_at)}:R> <@{e.actor_id}> {e.action}{target}{key}: {e.old_value!r} → {e.new_value!r}'
            )
        await ctx.send('\n'.join(lines)[:1900], ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot: EDalleBot) -> None:
    await bot.add_cog(Admin(bot))
