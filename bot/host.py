"""What the bot's parts need of the bot: `EDalleBot` satisfies `BotHost`.

The guard, the acknowledgements and the checks are built by the bot (`bot.bot` imports them), so they name
the bot through this protocol rather than importing `bot.bot`: imports run one way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import discord

    from bot.settings import Settings
    from edalle.jobs import JobStore


class BotHost(Protocol):
    settings: Settings
    store: JobStore
    results: Any  # edalle.jobs.result_store.ResultStore

    @property
    def user(self) -> discord.ClientUser | None: ...

    def get_partial_messageable(self, id: int, *, guild_id: int | None = None) -> discord.PartialMessageable: ...
    def get_guild(self, id: int, /) -> discord.Guild | None: ...
    def get_user(self, id: int, /) -> discord.User | None: ...
    async def fetch_user(self, user_id: int, /) -> discord.User: ...
