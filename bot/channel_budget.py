"""How many new messages Discord still lets the bot post in each channel, read from the answers to its own posts.

Discord limits a bot's new messages per channel (5 per 5 s) and says where a channel stands in the
`X-RateLimit-Limit` / `-Remaining` / `-Reset-After` headers of every answer. discord.py reads them to *wait*
when none are left; this module reads the same headers, through the client's `http_trace` (aiohttp's public
tracing hook, which discord.py passes on), so the bot can *decide* before it posts: `bot.acknowledgements`
folds acknowledgements into one message when a channel's budget runs low, rather than queue one message per
member behind the limit. Until a channel has answered once, Discord's usual limit is assumed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

MESSAGE_ROUTE = re.compile(r'/channels/(\d+)/messages$')  # POST: a new message in that channel
DISCORD_MESSAGES_PER_WINDOW = 5  # assumed for a channel whose headers the bot has not seen yet
DISCORD_WINDOW_SECONDS = 5.0


@dataclass
class _Budget:
    limit: int
    remaining: int
    resets_at: float  # on the budgets' clock


class ChannelBudgets:
    """The last word of Discord's headers on each channel's new-message budget."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._budgets: dict[int, _Budget] = {}

    def trace_config(self) -> aiohttp.TraceConfig:
        """Pass as the client's `http_trace`: every answer to a new message updates its channel's budget."""
        trace = aiohttp.TraceConfig()

        async def on_request_end(session: Any, context: Any, params: aiohttp.TraceRequestEndParams) -> None:
            if params.method == 'POST':
                match = MESSAGE_ROUTE.search(params.url.path)
                if match is not None:
                    self.observe(int(match[1]), params.response.headers)

        trace.on_request_end.append(on_request_end)
        return trace

    def observe(self, channel_id: int, headers: Mapping[str, str]) -> None:
        """Remember a channel's budget from an answer's headers (a 429's too); answers without them change nothing."""
        try:
            limit = int(headers['X-RateLimit-Limit'])
            remaining = int(headers['X-RateLimit-Remaining'])
            reset_after = float(headers['X-RateLimit-Reset-After'])
        except (KeyError, ValueError):
            return
        self._budgets[channel_id] = _Budget(limit, remaining, self.clock() + reset_after)
        if len(self._budgets) > 10_000:  # many channels over a long run: drop the windows that have ended
            now = self.clock()
            self._budgets = {k: v for k, v in self._budgets.items() if v.resets_at > now}

    def left(self, channel_id: int) -> int:
        """New messages the bot may still post in this channel before its window resets."""
        budget = self._budgets.get(channel_id)
        if budget is None:
            return DISCORD_MESSAGES_PER_WINDOW
        if self.clock() >= budget.resets_at:
            return budget.limit
        return budget.remaining

    def resets_in(self, channel_id: int) -> float:
        """Seconds until this channel's window ends (0: it has, or no answer said)."""
        budget = self._budgets.get(channel_id)
        return 0.0 if budget is None else max(0.0, budget.resets_at - self.clock())
