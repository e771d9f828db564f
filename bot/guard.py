"""The guard every member action passes: a ban refuses all of them, with its reason, before any handler runs.

A member can act on the bot in five ways, and each has exactly one door, where the guard stands:

- a text command (prefix, or a hybrid command typed as text): the bot's global check (`command_check`);
- a slash command, context menu or autocomplete, hybrid or pure: the command tree's `interaction_check`
  (`GuardedTree`, the bot's `tree_cls`);
- a button or select click, and a modal submit: `bot.utils.views.dispatch`, which every component's
  `callback` and every modal's `on_submit` calls (`tests/test_bot_bans.py` checks that they all do);
- a reaction, added or removed: `EDalleBot.dispatch` holds every reaction event until `Guard.gate_reaction`
  has looked the member up, so no `on_raw_reaction_add` / `on_reaction_add` listener ever hears a banned one.

So an operation's cog is covered by writing its commands, components, modals and reaction listeners the usual
way; it checks nothing itself. A banned member is refused *everything*, read-only commands and ℹ️ too (the
rule is short, and `.job` would post his grid again with working buttons): an ephemeral answer for an
interaction, a reply for a text command, a DM (or, when DMs are closed, a short channel note) for a reaction
on one of the bot's messages. The one exception is a cog with `admins_only = True` (`.admin …`): a bot admin
keeps those even if banned, so an admin can always lift a ban; a banned member who is not an admin is refused
them with the ban's reason like everything else. The store's `enqueue` still checks bans in its transaction.

Bans are read through a small cache (`BAN_CACHE_SECONDS`), so the hot path costs one store read per member
every few seconds: a ban or unban made elsewhere takes effect within that time; the bot's own `.admin ban` /
`.admin unban` forget the entry at once.

The guard also records *what* the current action is (`current_action()`: text command, slash, component,
modal or reaction, and its interaction if any), for code that answers differently when there is no
interaction to answer through (`bot.acknowledgements`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import reply_to_interaction, report_interaction_error, send_note
from bot.utils.checks import is_bot_admin
from edalle.errors import Banned

if TYPE_CHECKING:
    from bot.host import BotHost
    from edalle.jobs import Ban

log = logging.getLogger(__name__)

BAN_CACHE_SECONDS = 3.0  # a ban or unban made outside this process takes effect within this time
REACTION_NOTE_SECONDS = 30.0  # at most one "you are banned" note per member and server this often, for reactions
#: the reaction events the guard holds (clears are moderators' doing, not a member's action)
REACTION_EVENTS = frozenset({'raw_reaction_add', 'raw_reaction_remove', 'reaction_add', 'reaction_remove'})

ActionKind = Literal['text', 'slash', 'component', 'modal', 'reaction']


@dataclass(frozen=True)
class MemberAction:
    """What a member is doing right now, as the guard saw it at the door."""

    kind: ActionKind
    user_id: int
    guild_id: int | None
    channel_id: int | None
    interaction: discord.Interaction | None = None  # None: a text command or a reaction

    @property
    def answers_in_channel(self) -> bool:
        """No interaction to answer through: a channel message is the only way to answer this member."""
        return self.interaction is None


_ACTION: contextvars.ContextVar[MemberAction | None] = contextvars.ContextVar('edalle_member_action', default=None)


def current_action() -> MemberAction | None:
    """The member action the running task serves (set at the door; None in the courier and other bot tasks)."""
    return _ACTION.get()


class BannedMember(Banned, commands.CheckFailure):
    """A ban, raised from a command check: discord.py hands `CheckFailure`s to `on_command_error`."""

    @classmethod
    def of(cls, ban: Ban) -> BannedMember:
        return cls(ban.reason, ban.until)


def _interaction_kind(interaction: discord.Interaction) -> ActionKind:
    if interaction.type is discord.InteractionType.modal_submit:
        return 'modal'
    if interaction.type is discord.InteractionType.component:
        return 'component'
    return 'slash'


class Guard:
    """Looks members' bans up (cached) and refuses banned members at every door."""

    def __init__(self, bot: BotHost, *, ttl: float = BAN_CACHE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.bot = bot
        self.ttl = ttl
        self.clock = clock
        self._bans: dict[tuple[int | None, int], tuple[float, Ban | None]] = {}  # → (read at, ban)
        self._reading: dict[tuple[int | None, int], asyncio.Future[Ban | None]] = {}
        self._noted: dict[tuple[int | None, int], float] = {}  # reaction refusals told, → when

    # -- bans -------------------------------------------------------------------------------------------------

    def cached(self, guild_id: int | None, user_id: int) -> tuple[bool, Ban | None]:
        """(known, ban) from the cache alone: the reaction gate's synchronous fast path."""
        entry = self._bans.get((guild_id, user_id))
        if entry is None or self.clock() - entry[0] >= self.ttl:
            return False, None
        ban = entry[1]
        return True, ban if ban is None or ban.until is None or ban.until > time.time() else None

    async def ban_of(self, guild_id: int | None, user_id: int) -> Ban | None:
        """The member's ban in this server (or bot-wide), if any; one store read per member per `ttl`, shared by
        the actions that ask at the same moment."""
        known, ban = self.cached(guild_id, user_id)
        if known:
            return ban
        key = (guild_id, user_id)
        reading = self._reading.get(key)
        if reading is not None:
            return await asyncio.shield(reading)
        future: asyncio.Future[Ban | None] = asyncio.get_running_loop().create_future()
        self._reading[key] = future
        try:
            ban = await self.bot.store.get_ban(guild_id, user_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the callers waiting on it re-raise it themselves
            raise
        else:
            future.set_result(ban)
            self._bans[key] = (self.clock(), ban)
            if len(self._bans) > 10_000:  # a long-running bot in many servers: drop what has expired
                now = self.clock()
                self._bans = {k: v for k, v in self._bans.items() if now - v[0] < self.ttl}
            return ban
        finally:
            self._reading.pop(key, None)

    def forget(self, guild_id: int | None, user_id: int) -> None:
        """After this process banned or unbanned someone: read it again on the next action."""
        self._bans.pop((guild_id, user_id), None)
        self._noted.pop((guild_id, user_id), None)

    async def admit(
        self, user: discord.abc.User, guild: discord.Guild | None, guild_id: int | None, *, cog: Any = None
    ) -> None:
        """Raise `BannedMember` (with the ban's reason) if the member is banned here; `cog` is the command's cog, whose
        `admins_only` lets a bot admin through."""
        ban = await self.ban_of(guild_id, user.id)
        if ban is None:
            return
        if getattr(cog, 'admins_only', False) and await is_bot_admin(self.bot, user, guild):
            return
        raise BannedMember.of(ban)

    # -- the doors --------------------------------------------------------------------------------------------

    async def command_check(self, ctx: commands.Context[Any]) -> bool:
        """The bot's global check: every text command (and every hybrid one, typed or slashed)."""
        interaction = ctx.interaction
        kind: ActionKind = 'slash' if interaction is not None else 'text'
        guild_id = ctx.guild.id if ctx.guild else None
        _ACTION.set(MemberAction(kind, ctx.author.id, guild_id, ctx.channel.id if ctx.channel else None, interaction))
        try:
            await self.admit(ctx.author, ctx.guild, guild_id, cog=ctx.cog)
        except commands.CommandError:
            raise
        except Exception as exc:  # the store is down: report it like any failure (an id in the log), run nothing
            raise commands.CommandInvokeError(exc) from exc
        return True

    async def admit_interaction(self, interaction: discord.Interaction, *, cog: Any = None) -> None:
        """Components, modals (through `dispatch`) and app commands (through the tree): record the action, raise
        `BannedMember` if the member is banned."""
        action = MemberAction(
            _interaction_kind(interaction), interaction.user.id, interaction.guild_id, interaction.channel_id, interaction
        )
        _ACTION.set(action)
        await self.admit(interaction.user, interaction.guild, interaction.guild_id, cog=cog)

    def gate_reaction(self, event_name: str, args: tuple[Any, ...], deliver: Callable[[], None]) -> None:
        """Deliver a reaction event to the listeners only if its member is not banned here. Synchronous (it is
        called from `EDalleBot.dispatch`): a member known to be clear goes through at once; otherwise the event
        waits for one store read on a task of its own."""
        action = self._reaction_action(args)
        me = self.bot.user
        if action is None or (me is not None and action.user_id == me.id):
            deliver()
            return
        known, ban = self.cached(action.guild_id, action.user_id)
        if known and ban is None:
            _as(action, deliver)
            return
        task = asyncio.get_running_loop().create_task(self._gate_reaction(event_name, args, action, deliver))
        task.add_done_callback(_log_failure)

    async def _gate_reaction(
        self, event_name: str, args: tuple[Any, ...], action: MemberAction, deliver: Callable[[], None]
    ) -> None:
        try:
            ban = await self.ban_of(action.guild_id, action.user_id)
        except Exception as exc:  # the store is down: no handler could do anything with it either
            log.warning('reaction by user %s not handled: the ban check failed: %r', action.user_id, exc)
            return
        if ban is None:
            _as(action, deliver)
            return
        log.info('reaction by banned user %s in server %s ignored', action.user_id, action.guild_id)
        if event_name == 'raw_reaction_add' and self._on_my_message(args[0]):
            await self._tell_banned(action, args[0], BannedMember.of(ban).user_message)

    def _reaction_action(self, args: tuple[Any, ...]) -> MemberAction | None:
        first = args[0] if args else None
        if isinstance(first, discord.RawReactionActionEvent):
            return MemberAction('reaction', first.user_id, first.guild_id, first.channel_id)
        if isinstance(first, discord.Reaction) and len(args) > 1:
            message = first.message
            return MemberAction('reaction', args[1].id, message.guild.id if message.guild else None, message.channel.id)
        return None

    def _on_my_message(self, payload: discord.RawReactionActionEvent) -> bool:
        me = self.bot.user
        return me is not None and payload.message_author_id == me.id

    async def _tell_banned(self, action: MemberAction, payload: discord.RawReactionActionEvent, text: str) -> None:
        """A reaction has no interaction to answer privately: a DM, else a short channel note; once in a while."""
        key = (action.guild_id, action.user_id)
        now = self.clock()
        if now - self._noted.get(key, -REACTION_NOTE_SECONDS) < REACTION_NOTE_SECONDS:
            return
        self._noted[key] = now
        user = payload.member or self.bot.get_user(action.user_id)
        try:
            if user is None:
                user = await self.bot.fetch_user(action.user_id)
            await user.send(text)
        except discord.HTTPException:
            channel = self.bot.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
            if user is not None:
                await send_note(channel, user, text)


def _as(action: MemberAction, deliver: Callable[[], None]) -> None:
    """Run `deliver` with `action` as the current action: the listener tasks it schedules copy it."""

    def run() -> None:
        _ACTION.set(action)
        deliver()

    contextvars.copy_context().run(run)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error('the reaction gate failed', exc_info=task.exception())


class GuardedTree(app_commands.CommandTree):
    """The bot's command tree: every app command interaction (slash, context menu, autocomplete) meets the guard."""

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        guard: Guard | None = getattr(interaction.client, 'guard', None)
        if guard is None:
            return True
        command = interaction.command
        try:
            await guard.admit_interaction(interaction, cog=getattr(command, 'binding', None))
        except Banned as exc:
            if interaction.type is discord.InteractionType.autocomplete:
                await interaction.response.autocomplete([])
            else:
                await reply_to_interaction(interaction, exc.user_message)
            return False
        except Exception as exc:
            name = command.qualified_name if command is not None else '?'
            await report_interaction_error(interaction, exc, context=f'/{name} ban check for user {interaction.user.id}')
            return False
        return True
