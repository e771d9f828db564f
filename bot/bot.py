"""`EDalleBot`: the discord.py client, its intents, extensions, components and error handlers.

Resources come in through the constructor (discord.py's `advanced_startup.py`): the launcher opens the
job store and builds `Settings`, tests build both by hand. The bot never imports jax, torch or model
code (`tests/test_bot_units.py` checks), so nothing can stall its event loop; the GPU work happens in
worker processes that share only the SQLite job store with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

import discord
import yarl
from discord.ext import commands

from bot.acknowledgements import Acknowledgements
from bot.channel_budget import ChannelBudgets
from bot.errors import report_interaction_error
from bot.guard import REACTION_EVENTS, Guard, GuardedTree
from bot.settings import Settings
from bot.utils.views import DYNAMIC_ITEMS
from edalle import operations
from edalle.jobs.result_store import LocalResultStore

if TYPE_CHECKING:
    from edalle.jobs import Job, JobStore

log = logging.getLogger(__name__)

#: the error handlers first; then every operation's Discord module, in the registry's order; then the
#: generic commands; last the courier, which posts results through the operations' cogs
INITIAL_EXTENSIONS = (
    'bot.cogs.errors',
    *dict.fromkeys(operation.discord for operation in operations.OPERATIONS),
    'bot.cogs.jobs',
    'bot.cogs.admin',
    'bot.delivery',
)
SHUTDOWN_GRACE_SECONDS = 5.0  # for command handlers already running when the bot is told to stop
COMMANDS_HASH_FILE = 'slash-commands.sha256'  # in the data dir: what was last synced, so restarts don't re-sync


def use_discord_endpoints(api_base: str | None, gateway_url: str | None) -> None:
    """Point discord.py at a Discord-compatible server (DISCORD_API_BASE, DISCORD_GATEWAY_URL).

    `Route.BASE` is read whenever a request is built, and a non-sharded client never asks `/gateway/bot`,
    so both class attributes must be set, before `login()`.
    """
    if api_base:
        discord.http.Route.BASE = api_base.rstrip('/')
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def intents(text_commands: bool = True) -> discord.Intents:
    """Default intents, plus Message Content (privileged: enable it in the Developer Portal) for `.imagine`.

    Without text commands (`EDALLE_TEXT_COMMANDS=0`) the bot asks for no privileged intent: slash commands,
    buttons and reactions need none, and text commands still work where Discord sends the text anyway
    (messages that mention the bot, and direct messages).
    """
    wanted = discord.Intents.default()
    wanted.message_content = text_commands
    return wanted


def silence_voice_warnings() -> None:
    """discord.py warns at every start that voice needs PyNaCl and davey; this bot never joins voice."""
    discord.VoiceClient.warn_nacl = False
    if hasattr(discord.VoiceClient, 'warn_dave'):
        discord.VoiceClient.warn_dave = False


class ResultCourier(Protocol):
    """What the bot asks of the courier that `bot.delivery` attaches as it loads."""

    delivered: list[int]

    def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def outgoing_result(self, job: Job) -> Any: ...
    async def post_result(self, job: Job) -> int | None: ...


class EDalleBot(commands.Bot):
    """The bot: text commands with `settings.prefix`, slash commands, persistent components, a result courier."""

    def __init__(self, *, settings: Settings, store: JobStore, worker_status: Any = None, results: Any = None) -> None:
        budgets = ChannelBudgets()
        silence_voice_warnings()
        super().__init__(
            command_prefix=commands.when_mentioned_or(settings.prefix),
            intents=intents(settings.text_commands),
            help_command=commands.DefaultHelpCommand(no_category='Commands'),
            tree_cls=GuardedTree,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False),
            guild_ready_timeout=settings.guild_ready_timeout,
            activity=discord.Game(name=f'{settings.prefix if settings.text_commands else "/"}imagine <prompt>'),
            http_trace=budgets.trace_config(),
        )
        self.settings = settings
        self.store = store
        # Every member action meets the guard first (bans); see bot.guard for its doors.
        self.guard = Guard(self)
        self.add_check(self.guard.command_check)
        # Text commands' acknowledgements, folded into one message per channel under a burst.
        self.acks = Acknowledgements(self, budgets)
        self.worker_status = worker_status  # the supervisor when this process runs the worker (for .queue)
        # Result files, read through edalle.jobs.result_store (workers may be on other hosts); local by default.
        self.results = results if results is not None else LocalResultStore(settings.data_dir)
        self.courier: ResultCourier  # set by the `bot.delivery` extension in `setup_hook`

    async def login(self, token: str) -> None:
        use_discord_endpoints(self.settings.api_base, self.settings.gateway_url)
        await super().login(token)

    async def setup_hook(self) -> None:
        for extension in INITIAL_EXTENSIONS:
            await self.load_extension(extension)
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        self.tree.on_error = self.on_app_command_error
        await self.sync_commands()

    async def close(self) -> None:
        """Stop posting, let commands already running finish (so each job gets its status message recorded),
        then disconnect."""
        if hasattr(self, 'courier'):
            await self.courier.stop()
        current = asyncio.current_task()
        running = [
            task
            for task in asyncio.all_tasks()
            if task is not current
            and not task.done()
            and task.get_name().startswith(('discord.py: ', 'discord-ui-', 'CommandTree-invoker'))
        ]
        if running:
            await asyncio.wait(running, timeout=SHUTDOWN_GRACE_SECONDS)
        await self.acks.close()  # acknowledgements still folded: post them now
        await super().close()

    def dispatch(self, event_name: str, /, *args: Any, **kwargs: Any) -> None:
        """Every gateway event goes out here; reaction events first pass the guard (a banned member's reach no
        listener), whichever cog listens for them."""
        if event_name in REACTION_EVENTS:
            self.guard.gate_reaction(event_name, args, lambda: super(EDalleBot, self).dispatch(event_name, *args, **kwargs))
            return
        super().dispatch(event_name, *args, **kwargs)

    async def on_ready(self) -> None:
        log.info('connected as %s (id %s) to %d server(s)', self.user, getattr(self.user, 'id', '?'), len(self.guilds))

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: discord.app_commands.AppCommandError
    ) -> None:
        """Pure slash commands' errors (hybrid ones go through `on_command_error` in the errors cog)."""
        name = interaction.command.qualified_name if interaction.command else '?'
        await report_interaction_error(interaction, error, context=f'/{name} for user {interaction.user.id}')

    # -- slash command sync -----------------------------------------------------------------------------------

    def _commands_fingerprint(self) -> str:
        guild = discord.Object(self.settings.dev_guild_id) if self.settings.dev_guild_id else None
        payload = [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)]
        blob = json.dumps({'guild': self.settings.dev_guild_id, 'commands': payload}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    async def sync_commands(self) -> None:
        """Sync slash commands when they changed since the last sync (or always/never, per settings).

        Discord rate-limits syncs and global ones take a while to spread, so the bot remembers a fingerprint
        of what it synced in the data dir rather than syncing on every start.
        """
        mode = self.settings.sync_commands
        if mode == 'never':
            return
        guild = None
        if self.settings.dev_guild_id:
            guild = discord.Object(self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
        fingerprint = self._commands_fingerprint()
        marker = self.settings.data_dir / COMMANDS_HASH_FILE
        if mode == 'auto' and marker.is_file() and marker.read_text().strip() == fingerprint:
            log.debug('slash commands unchanged since the last sync')
            return
        synced = await self.tree.sync(guild=guild)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(fingerprint)
        log.info('synced %d slash command(s) %s', len(synced), f'to server {guild.id}' if guild else 'globally')
