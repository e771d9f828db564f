"""Acknowledgements of text commands: a message each while a channel is calm, one message for many in a burst.

A text command (or a reaction) has no interaction to answer through, so the bot's answer (a job's status
message, or a refusal) is a new channel message, and Discord lets a bot post 5 of those per 5 s per channel.
Thirty members typing `.imagine` in the same second got thirty replies paced by that limit: the last waited
about 30 s to see that the bot had taken his command. So each channel has a lane here:

- while the channel's budget (`bot.channel_budget`, read from Discord's own headers) has more than `RESERVE`
  messages left and nothing waits, an acknowledgement is posted on its own, as before: a job's status message
  (a reply with ✖, which progress edits and the result replaces), or a refusal;
- otherwise it waits (at most `GATHER_SECONDS` while the budget lasts) and everything waiting goes out as one
  message that names each member with his job and place in the queue, or with his refusal. The reserve keeps
  a channel's last messages of each window for these, so a burst never queues acknowledgements behind the limit.

A job acknowledged in a combined message has no status message of its own: it shows no progress, and its
result arrives as a new message that mentions the member (the courier posts any job without a status message
that way). Interactions (slash commands, buttons, selects, modals) are answered through the interaction and
never wait here: only an action with no interaction (`bot.guard.current_action()`) is folded.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import discord

from bot.channel_budget import ChannelBudgets
from bot.guard import current_action

if TYPE_CHECKING:
    from bot.host import BotHost

log = logging.getLogger(__name__)

RESERVE = 2  # a channel's last new messages in each rate-limit window are kept for combined acknowledgements
GATHER_SECONDS = 0.5  # how long an acknowledgement waits for others while the budget lasts (and between two)
MAX_MESSAGE_CHARS = 1900  # under Discord's 2000
HEADER = 'Taken (one message for everyone while this channel is busy):'
CLOSE_SECONDS = 10.0
T = TypeVar('T')


@dataclass
class _Waiting:
    user_id: int
    text: str  # the member's line, without his mention: his job and place, or his refusal


@dataclass
class _Lane:
    channel: discord.abc.Messageable
    waiting: list[_Waiting] = field(default_factory=list)
    since: float = 0.0  # when the first of `waiting` came
    last_combined: float = -math.inf
    posting: int = 0  # this lane's posts sent whose answer is not back yet
    flusher: asyncio.Task[None] | None = None


class Acknowledgements:
    """The channels' lanes. `folding=False` posts every acknowledgement on its own (the behaviour before lanes)."""

    def __init__(
        self,
        bot: BotHost,
        budgets: ChannelBudgets,
        *,
        folding: bool = True,
        reserve: int = RESERVE,
        gather_seconds: float = GATHER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bot = bot
        self.budgets = budgets
        self.folding = folding
        self.reserve = reserve
        self.gather_seconds = gather_seconds
        self.clock = clock
        self._lanes: dict[int, _Lane] = {}
        self._closing = False

    async def status(
        self,
        channel_id: int | None,
        guild_id: int | None,
        user_id: int,
        line: str,
        post: Callable[[], Awaitable[discord.Message]],
        *,
        foldable: bool | None = None,
    ) -> discord.Message | None:
        """A new job's acknowledgement: `post()` its status message and return it, or (in a burst) put `line` in the
        channel's next combined message and return None. `foldable` says whether it may be folded (None: when the
        current action has no interaction to answer through)."""
        if channel_id is None or not self._folds(channel_id, foldable=foldable):
            return await self._alone(channel_id, guild_id, post)
        self._wait(channel_id, guild_id, user_id, line)
        return None

    async def refusal(
        self,
        channel_id: int,
        guild_id: int | None,
        user_id: int,
        text: str,
        post: Callable[[], Awaitable[object]],
        *,
        foldable: bool | None = None,
    ) -> None:
        """A refused command's answer: `post()` it, or (in a burst) say it in the next combined message. `foldable`
        says whether this answer may be folded (None: when the current action has no interaction)."""
        if not self._folds(channel_id, foldable=foldable):
            await self._alone(channel_id, guild_id, post)
            return
        self._wait(channel_id, guild_id, user_id, text)

    async def close(self) -> None:
        """Post what still waits now, without waiting for its gather (the bot is stopping)."""
        self._closing = True
        flushers = [lane.flusher for lane in self._lanes.values() if lane.flusher is not None and not lane.flusher.done()]
        if flushers:
            await asyncio.wait(flushers, timeout=CLOSE_SECONDS)

    # -- deciding ---------------------------------------------------------------------------------------------

    def _folds(self, channel_id: int, *, foldable: bool | None) -> bool:
        if not self.folding:
            return False
        if foldable is None:
            action = current_action()
            foldable = action is not None and action.answers_in_channel
        if not foldable:
            return False
        lane = self._lanes.get(channel_id)
        if lane is not None and lane.waiting:
            return True  # after those already waiting, never before them
        return self._left(channel_id) <= self.reserve

    def _left(self, channel_id: int) -> int:
        lane = self._lanes.get(channel_id)
        return self.budgets.left(channel_id) - (lane.posting if lane is not None else 0)

    def _due_in(self, channel_id: int, lane: _Lane) -> float:
        """Seconds until the waiting acknowledgements go out: at once when the budget is back, after a short gather
        while it lasts, or when the channel's window resets."""
        left = self._left(channel_id)
        if left > self.reserve or self._closing:
            return 0.0
        if left >= 1:
            return max(lane.since, lane.last_combined) + self.gather_seconds - self.clock()
        return max(self.budgets.resets_in(channel_id), 0.05)

    # -- posting ----------------------------------------------------------------------------------------------

    def _lane(self, channel_id: int, guild_id: int | None) -> _Lane:
        lane = self._lanes.get(channel_id)
        if lane is None:
            lane = self._lanes[channel_id] = _Lane(self.bot.get_partial_messageable(channel_id, guild_id=guild_id))
        return lane

    def _drop_if_idle(self, channel_id: int) -> None:
        lane = self._lanes.get(channel_id)
        if lane is None or lane.waiting or lane.posting:
            return
        if lane.flusher is None or lane.flusher.done() or lane.flusher is asyncio.current_task():  # (its own last step)
            del self._lanes[channel_id]

    async def _alone(self, channel_id: int | None, guild_id: int | None, post: Callable[[], Awaitable[T]]) -> T:
        if channel_id is None:
            return await post()
        lane = self._lane(channel_id, guild_id)
        lane.posting += 1
        try:
            return await post()
        finally:
            lane.posting -= 1
            self._drop_if_idle(channel_id)

    def _wait(self, channel_id: int, guild_id: int | None, user_id: int, text: str) -> None:
        lane = self._lane(channel_id, guild_id)
        if not lane.waiting:
            lane.since = self.clock()
        lane.waiting.append(_Waiting(user_id, text))
        if lane.flusher is None or lane.flusher.done():
            lane.flusher = asyncio.get_running_loop().create_task(
                self._flush_when_due(channel_id, lane), name=f'edalle-acks-{channel_id}'
            )

    async def _flush_when_due(self, channel_id: int, lane: _Lane) -> None:
        try:
            while lane.waiting:
                delay = self._due_in(channel_id, lane)
                if delay > 0:
                    await asyncio.sleep(min(delay, 0.25))  # the budget may come back sooner: look again
                    continue
                await self._post_waiting(lane)
        finally:
            self._drop_if_idle(channel_id)

    async def _post_waiting(self, lane: _Lane) -> None:
        batch, lane.waiting = lane.waiting, []
        if not batch:
            return
        lane.last_combined = self.clock()
        for text, users in combined_messages(batch):
            lane.posting += 1
            try:
                await lane.channel.send(text, allowed_mentions=discord.AllowedMentions(users=users))
            except discord.HTTPException as exc:  # the jobs stand; their results are still posted (or sent by DM)
                log.warning('could not post %d acknowledgements in channel %s: %s', len(batch), lane.channel.id, exc)
            finally:
                lane.posting -= 1
        log.info('channel %s: %d acknowledgements posted as one message', lane.channel.id, len(batch))


def combined_messages(batch: list[_Waiting]) -> list[tuple[str, list[discord.Object]]]:
    """The combined messages for `batch`, in arrival order: one line per member and text (members given the same
    refusal share a line); split under Discord's length limit. Each comes with the members it may mention."""
    lines: dict[str, list[int]] = {}
    for waiting in batch:
        users = lines.setdefault(waiting.text, [])
        if waiting.user_id not in users:
            users.append(waiting.user_id)
    messages: list[tuple[str, list[discord.Object]]] = []
    text, users_here = HEADER, []
    for line_text, users in lines.items():
        line = f'{", ".join(f"<@{u}>" for u in users)} {line_text}'[: MAX_MESSAGE_CHARS - len(HEADER) - 1]
        if len(text) + 1 + len(line) > MAX_MESSAGE_CHARS:
            messages.append((text, [discord.Object(u) for u in dict.fromkeys(users_here)]))
            text, users_here = HEADER, []
        text += '\n' + line
        users_here += users
    messages.append((text, [discord.Object(u) for u in dict.fromkeys(users_here)]))
    return messages
