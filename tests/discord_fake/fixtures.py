"""Pytest fixtures and async helpers for driving a discord.py bot against `FakeDiscord`.

pytest-asyncio is not used: a test is a plain function that calls `run(main())`, and inside the coroutine
`running_fake()` starts the server and `running_bot(bot, fake)` logs a bot in and waits for READY. For a bot
that runs as a subprocess (the real entry point), the `fake_discord_server` fixture runs the fake on its own
thread and `fake_discord_server.env` holds DISCORD_API_BASE / DISCORD_GATEWAY_URL / DISCORD_TOKEN.

discord.py only *logs* exceptions raised in commands, views and event handlers, so `discord_errors` (or
`fail_on_discord_errors()`) turns every ERROR record of the `discord` logger into a test failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from .server import FakeDiscord, point_discord_at

if TYPE_CHECKING:
    import discord

T = TypeVar('T')


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run one test coroutine on a fresh event loop with an overall deadline (a hung bot fails, not hangs)."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class DiscordErrorCollector(logging.Handler):
    """Collects ERROR (and worse) records from the `discord` logger tree."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def report(self) -> str:
        lines = []
        for record in self.records:
            text = f'{record.name}: {record.getMessage()}'
            if record.exc_info and record.exc_info[1] is not None:
                text += f' -> {type(record.exc_info[1]).__name__}: {record.exc_info[1]}'
            lines.append(text)
        return '\n'.join(lines)

    def check(self) -> None:
        if self.records:
            raise AssertionError('discord.py logged errors:\n' + self.report())


@contextlib.contextmanager
def fail_on_discord_errors(logger_name: str = 'discord') -> Iterator[DiscordErrorCollector]:
    """Attach a collector to `logger_name` and raise at exit if it saw any ERROR record."""
    logger = logging.getLogger(logger_name)
    collector = DiscordErrorCollector()
    logger.addHandler(collector)
    try:
        yield collector
    finally:
        logger.removeHandler(collector)
    collector.check()


@contextlib.asynccontextmanager
async def running_fake(*, strict: bool = True, **kwargs: Any) -> AsyncIterator[FakeDiscord]:
    """Start a FakeDiscord on a free port and point discord.py at it; with `strict`, unknown routes fail at exit."""
    fake = FakeDiscord(**kwargs)
    await fake.start()
    restore = point_discord_at(fake)
    failed = False
    try:
        yield fake
    except BaseException:
        failed = True
        raise
    finally:
        restore()
        await fake.stop()
        if strict and not failed:
            fake.assert_no_unknown_routes()


@contextlib.asynccontextmanager
async def running_bot(
    bot: discord.Client, fake: FakeDiscord, *, timeout: float = 5.0, fast_reidentify: bool = True
) -> AsyncIterator[discord.Client]:
    """Log `bot` in against the fake, connect, wait for `on_ready`, and close it at exit.

    Build the bot with `guild_ready_timeout=0.05` or READY waits 2 s for more guilds. `login()` runs first
    because `wait_until_ready()` is only usable after it (discord.py creates its internal events there).
    With `fast_reidentify`, the 5 s sleep discord.py's `before_identify_hook` takes before every non-initial
    IDENTIFY (after an invalidated session) is skipped on this instance.
    """
    if fast_reidentify:

        async def no_wait(shard_id: int | None, *, initial: bool = False) -> None:
            return None

        bot.before_identify_hook = no_wait  # type: ignore[method-assign]
    await bot.login(fake.token)
    task = asyncio.create_task(bot.connect(reconnect=True), name='discord-bot-connect')
    ready = asyncio.create_task(bot.wait_until_ready())
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises the connection error (e.g. PrivilegedIntentsRequired)
            raise AssertionError('the bot disconnected before becoming ready')
        if ready not in done:
            raise AssertionError(f'the bot was not ready within {timeout} s')
        yield bot
    finally:
        ready.cancel()
        await bot.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 5.0)


class ThreadedFakeDiscord:
    """A FakeDiscord running on its own thread and event loop, for a bot in a subprocess or another loop.

    Attribute access is forwarded to the FakeDiscord; its coroutine methods become blocking calls
    (`server.send_user_message(...)`), and `await server.acall(server.fake.verb(...))` works from another loop.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name='fake-discord', daemon=True)
        self.fake: FakeDiscord

    def start(self) -> ThreadedFakeDiscord:
        self._thread.start()

        async def create() -> FakeDiscord:
            return await FakeDiscord(**self._kwargs).start()

        self.fake = asyncio.run_coroutine_threadsafe(create(), self.loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def call(self, coro: Awaitable[T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    async def acall(self, coro: Awaitable[T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))  # type: ignore[arg-type]

    @property
    def env(self) -> dict[str, str]:
        return self.fake.env()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.fake, name)
        if inspect.iscoroutinefunction(attr):

            def blocking(*args: Any, **kwargs: Any) -> Any:
                return self.call(attr(*args, **kwargs))

            return blocking
        return attr


@dataclass(frozen=True)
class DiscordURLs:
    """Where a subprocess bot should connect: REST base (…/api/v10), gateway URL and the token the fake accepts."""

    api_base: str
    gateway_url: str
    token: str

    @property
    def env(self) -> dict[str, str]:
        return {'DISCORD_API_BASE': self.api_base, 'DISCORD_GATEWAY_URL': self.gateway_url, 'DISCORD_TOKEN': self.token}


@pytest.fixture
def discord_errors() -> Iterator[DiscordErrorCollector]:
    """Fail the test if the `discord` logger recorded any ERROR (exceptions in views, commands, events)."""
    with fail_on_discord_errors() as collector:
        yield collector


@pytest.fixture
def fake_discord_server() -> Iterator[ThreadedFakeDiscord]:
    """A FakeDiscord on a background thread; fails at teardown if the bot hit routes the fake does not know."""
    server = ThreadedFakeDiscord().start()
    try:
        yield server
    finally:
        server.stop()
    server.fake.assert_no_unknown_routes()


@pytest.fixture
def fake_discord_urls(fake_discord_server: ThreadedFakeDiscord) -> DiscordURLs:
    """The URLs (and token) that point a bot subprocess at `fake_discord_server`."""
    fake = fake_discord_server.fake
    return DiscordURLs(fake.api_base, fake.gateway_url, fake.token)
