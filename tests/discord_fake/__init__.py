"""A local Discord-compatible server (REST v10 + gateway) for end-to-end tests with the real discord.py client.

Quick start::

    from discord_fake import running_bot, running_fake, run

    def test_reply(discord_errors):
        async def main():
            async with running_fake() as fake, running_bot(make_bot(), fake):
                await fake.send_user_message(fake.channel, fake.alice, '.ping')
                reply = await fake.wait_for_message(fake.channel)
                assert reply.content == 'pong'

        run(main())

See `server.FakeDiscord` for the verbs and `fixtures` for the pytest fixtures.
"""

from __future__ import annotations

from .fixtures import (
    DiscordErrorCollector,
    DiscordURLs,
    ThreadedFakeDiscord,
    discord_errors,
    fail_on_discord_errors,
    fake_discord_server,
    fake_discord_urls,
    run,
    running_bot,
    running_fake,
)
from .rest import Injection, RateLimit, RecordedRequest, UploadedFile
from .server import FakeDiscord, FakeDiscordError, FakeEvent, InteractionRecord, point_discord_at
from .state import (
    ChannelType,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeUser,
    Intents,
    MessageFlags,
    MessageType,
    Permissions,
)

__all__ = [
    'ChannelType',
    'DiscordErrorCollector',
    'DiscordURLs',
    'FakeAttachment',
    'FakeChannel',
    'FakeDiscord',
    'FakeDiscordError',
    'FakeEvent',
    'FakeGuild',
    'FakeMember',
    'FakeMessage',
    'FakeRole',
    'FakeUser',
    'Injection',
    'Intents',
    'InteractionRecord',
    'MessageFlags',
    'MessageType',
    'Permissions',
    'RateLimit',
    'RecordedRequest',
    'ThreadedFakeDiscord',
    'UploadedFile',
    'discord_errors',
    'fail_on_discord_errors',
    'fake_discord_server',
    'fake_discord_urls',
    'point_discord_at',
    'run',
    'running_bot',
    'running_fake',
]
