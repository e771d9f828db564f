"""`FakeDiscord`: a local Discord-compatible server (REST v10 + gateway) that the real discord.py client talks to.

Tests start it in-process on a free port (`async with FakeDiscord() as fake:`), point discord.py at it
(`point_discord_at(fake.http_url)` or the DISCORD_API_BASE / DISCORD_GATEWAY_URL environment variables for a
subprocess) and then act as Discord's users: send messages, click buttons, react, invoke slash commands, and
wait for what the bot does in return. The world starts with one guild (`fake.guild`) with channels `general`
and `images`, an owner, a moderator with Manage Server (`fake.moderator`) and two plain members (`fake.alice`,
`fake.bob`).

Verbs (all async): send_user_message, edit_user_message, delete_user_message, add_reaction, remove_reaction,
click_button, select, invoke_slash, autocomplete, submit_modal, disconnect_gateway, request_reconnect,
invalidate_session, add_user, add_guild, add_channel, set_channel_permissions, set_role_permissions,
set_member_roles, set_premium_tier. Waits: wait_for_message, wait_for_edit, wait_for_request,
wait_for_interaction_response, wait_for_ready, wait_for_resume, wait_for_event; they look at events from the
last verb on (or from `since=fake.mark()`). Injections: inject_status, inject_429, inject_delay,
inject_error_after_saving (the request takes effect, the answer is a 5xx). Limits (off unless asked for):
rate_limit, limit_channel_messages (Discord's 5 new messages per 5 s per channel). Records:
requests, requests_matching, unknown_requests, messages_in, bot_messages, ephemeral_messages, interactions,
commands / synced_command / syncs, original_response, followups, gateway.received.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import yarl
from aiohttp import web

from .gateway import Gateway, GatewaySession
from .rest import API_PREFIX, Injection, RateLimit, RecordedRequest, RestApi, UploadedFile
from .state import (
    ChannelType,
    FakeApplication,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeMessage,
    FakeReaction,
    FakeRole,
    FakeUser,
    Intents,
    MessageFlags,
    MessageType,
    Overwrite,
    Permissions,
    World,
    emoji_key,
    emoji_payload,
    now_iso,
)

UserLike = FakeUser | FakeMember | int
ChannelLike = FakeChannel | int
MessageLike = FakeMessage | int
FileLike = tuple[str, bytes] | tuple[str, bytes, str] | FakeAttachment


class FakeDiscordError(AssertionError):
    """A test asked the fake for something a real Discord user could not do (or a wait timed out)."""


@dataclass
class FakeEvent:
    """One entry in the fake's event log, which the `wait_for_*` verbs search."""

    seq: int
    kind: str
    obj: Any
    time: float = field(default_factory=time.monotonic)


@dataclass
class InteractionRecord:
    """An interaction the fake dispatched, and how the bot answered it."""

    id: int
    token: str
    type: int
    user_id: int
    channel_id: int
    guild_id: int | None
    data: dict[str, Any]
    payload: dict[str, Any]
    message_id: int | None = None
    created: float = field(default_factory=time.monotonic)
    callback_type: int | None = None
    callback_data: dict[str, Any] | None = None
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    autocomplete_choices: list[dict[str, Any]] | None = None
    expired: bool = False

    @property
    def answered(self) -> bool:
        return self.callback_type is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class FakeDiscord:
    """The server, its world and the test-side verbs. Use as `async with FakeDiscord() as fake:`."""

    def __init__(
        self,
        *,
        host: str = '127.0.0.1',
        port: int = 0,
        interaction_ack_timeout: float = 3.0,
        interaction_token_lifetime: float = 15 * 60.0,
        nonce_window_seconds: float = 120.0,
    ) -> None:
        self.host = host
        self.port = port
        #: Seconds the bot has to answer an interaction callback (Discord: 3 s), else 10062 Unknown interaction.
        self.interaction_ack_timeout = interaction_ack_timeout
        #: Seconds an interaction token accepts followups and edits (Discord: 15 min), else 50027.
        self.interaction_token_lifetime = interaction_token_lifetime
        #: Seconds a message nonce sent with `enforce_nonce` is remembered (Discord: "the past few minutes").
        self.nonce_window_seconds = nonce_window_seconds
        self.world = World()
        self.gateway = Gateway(self)
        self.rest = RestApi(self)
        self.requests: list[RecordedRequest] = []
        self.unknown_requests: list[RecordedRequest] = []
        self.injections: list[Injection] = []
        self.rate_limits: list[RateLimit] = []
        self.events: list[FakeEvent] = []
        self.interactions: dict[int, InteractionRecord] = {}
        self.interactions_by_token: dict[str, InteractionRecord] = {}
        #: Synced application commands: scope (None = global, else guild id) -> command id -> command object.
        self.commands: dict[int | None, dict[int, dict[str, Any]]] = {}
        #: Each bulk sync as (scope, [names]), oldest first.
        self.syncs: list[tuple[int | None, list[str]]] = []
        self.typing_channels: list[int] = []
        self.presence: dict[str, Any] | None = None
        self._attachments: dict[int, FakeAttachment] = {}
        self._waiters: list[tuple[Callable[[FakeEvent], bool], asyncio.Future[FakeEvent]]] = []
        self._mark = 0
        self._runner: web.AppRunner | None = None
        self._populate()

    # -- lifecycle --------------------------------------------------------------------------------------------

    def _populate(self) -> None:
        w = self.world
        self.owner = w.owner_user
        self.moderator = w.add_user('moderator', global_name='Moderator')
        self.alice = w.add_user('alice')
        self.bob = w.add_user('bob')
        self.guild = w.add_guild('Test Guild')
        self.moderator_role = w.add_role(self.guild, 'Moderator', Permissions.MANAGE_GUILD | Permissions.MANAGE_MESSAGES)
        w.add_member(self.guild, self.moderator, roles=[self.moderator_role])
        w.add_member(self.guild, self.alice)
        w.add_member(self.guild, self.bob)
        self.category = w.add_channel(self.guild, 'Text Channels', type=ChannelType.GUILD_CATEGORY)
        self.channel = w.add_channel(self.guild, 'general', parent=self.category)
        self.images_channel = w.add_channel(self.guild, 'images', parent=self.category)
        self.guild.system_channel_id = self.channel.id

    async def start(self) -> FakeDiscord:
        app = web.Application(middlewares=[self.rest.middleware], client_max_size=512 * 1024 * 1024)
        app.router.add_get('/', self.gateway.handle)
        app.router.add_get('/resume', self.gateway.handle)
        self.rest.register(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        port = self.port or free_port()
        site = web.TCPSite(self._runner, self.host, port)
        await site.start()
        self.port = port
        self.world.http_base = self.http_url
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self.gateway.close_all()
            await self._runner.cleanup()
            self._runner = None
        for _, future in self._waiters:
            if not future.done():
                future.cancel()

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def http_url(self) -> str:
        return f'http://{self.host}:{self.port}'

    @property
    def api_base(self) -> str:
        """Value for `discord.http.Route.BASE` and DISCORD_API_BASE."""
        return self.http_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """Value for `DiscordWebSocket.DEFAULT_GATEWAY` and DISCORD_GATEWAY_URL."""
        return f'ws://{self.host}:{self.port}/'

    @property
    def resume_gateway_url(self) -> str:
        return f'ws://{self.host}:{self.port}/resume'

    @property
    def token(self) -> str:
        return self.world.token

    @property
    def bot_user(self) -> FakeUser:
        return self.world.bot_user

    @property
    def application(self) -> FakeApplication:
        return self.world.application

    def env(self) -> dict[str, str]:
        """Environment variables that point a bot subprocess at this server."""
        return {'DISCORD_API_BASE': self.api_base, 'DISCORD_GATEWAY_URL': self.gateway_url, 'DISCORD_TOKEN': self.token}

    # -- event log and waiting --------------------------------------------------------------------------------

    def mark(self) -> int:
        """The current position in the event log; pass it as `since=` to wait only for what happens after."""
        return len(self.events)

    def _verb(self) -> None:
        """Every test-side action moves the default `since` of the waits to 'after this action'."""
        self._mark = len(self.events)

    def _emit(self, kind: str, obj: Any) -> FakeEvent:
        event = FakeEvent(len(self.events), kind, obj)
        self.events.append(event)
        for entry in list(self._waiters):
            predicate, future = entry
            if future.done():
                self._waiters.remove(entry)
                continue
            try:
                matched = predicate(event)
            except Exception as exc:  # a broken predicate should fail the waiting test, not the server
                future.set_exception(exc)
                self._waiters.remove(entry)
                continue
            if matched:
                future.set_result(event)
                self._waiters.remove(entry)
        return event

    async def wait_for_event(
        self, predicate: Callable[[FakeEvent], bool], timeout: float = 5.0, *, since: int | None = None, what: str = 'event'
    ) -> FakeEvent:
        """The first event at or after `since` (default: the last verb) matching `predicate`, waiting if needed."""
        start = self._mark if since is None else since
        for event in self.events[start:]:
            if predicate(event):
                return event
        future: asyncio.Future[FakeEvent] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise FakeDiscordError(f'timed out after {timeout} s waiting for {what}') from None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def wait_for_request(
        self, method: str, path_regex: str, timeout: float = 5.0, *, since: int | None = None, status: int | None = None
    ) -> RecordedRequest:
        """The bot's next REST request (answered) whose method and path (after /api/v10) match; regex uses search."""
        pattern = re.compile(path_regex)

        def match(event: FakeEvent) -> bool:
            req = event.obj
            return (
                event.kind == 'request'
                and method in ('*', req.method)
                and pattern.search(req.path) is not None
                and (status is None or req.status == status)
            )

        event = await self.wait_for_event(match, timeout, since=since, what=f'{method} {path_regex}')
        return event.obj

    async def wait_for_message(
        self,
        channel: ChannelLike | None = None,
        predicate: Callable[[FakeMessage], bool] | None = None,
        timeout: float = 5.0,
        *,
        since: int | None = None,
        ephemeral: bool | None = False,
        author: UserLike | None = None,
        edited: bool = False,
    ) -> FakeMessage:
        """A message created (or with `edited=True`, edited) after `since`; by default by the bot, not ephemeral."""
        channel_id = self._channel_id(channel) if channel is not None else None
        author_id = self._user_id(author) if author is not None else self.bot_user.id
        kinds = ('message_update',) if edited else ('message_create',)

        def match(event: FakeEvent) -> bool:
            if event.kind not in kinds:
                return False
            message: FakeMessage = event.obj
            return (
                (channel_id is None or message.channel_id == channel_id)
                and (ephemeral is None or message.ephemeral == ephemeral)
                and message.author.id == author_id
                and (predicate is None or predicate(message))
            )

        event = await self.wait_for_event(match, timeout, since=since, what='a message' if not edited else 'an edit')
        return event.obj

    async def wait_for_edit(
        self, message: MessageLike, predicate: Callable[[FakeMessage], bool] | None = None, timeout: float = 5.0, **kw: Any
    ) -> FakeMessage:
        """The next edit of one message (matching `predicate`)."""
        message_id = self._message(message).id
        return await self.wait_for_message(
            None,
            lambda m: m.id == message_id and (predicate is None or predicate(m)),
            timeout,
            edited=True,
            ephemeral=None,
            **kw,
        )

    async def wait_for_interaction_response(self, record: InteractionRecord, timeout: float = 5.0) -> InteractionRecord:
        """Wait until the bot has called back for this interaction (any callback type)."""
        await self.wait_for_event(
            lambda e: e.kind == 'interaction_response' and e.obj is record,
            timeout,
            since=0,
            what=f'a callback for interaction {record.id}',
        )
        return record

    async def wait_for_ready(self, timeout: float = 5.0) -> GatewaySession:
        """Wait for an IDENTIFY (READY sent) after the last verb."""
        return (await self.wait_for_event(lambda e: e.kind == 'identify', timeout, what='IDENTIFY')).obj

    async def wait_for_resume(self, timeout: float = 5.0, *, since: int | None = None) -> GatewaySession:
        return (await self.wait_for_event(lambda e: e.kind == 'resume', timeout, since=since, what='RESUME')).obj

    # -- requests and injections ------------------------------------------------------------------------------

    def _record_request(
        self, method: str, path: str, query: dict[str, str], body: Any, files: list[UploadedFile], headers: dict[str, str]
    ) -> RecordedRequest:
        record = RecordedRequest(len(self.requests), method, path, query, body, files, headers)
        self.requests.append(record)
        return record

    def _request_finished(self, record: RecordedRequest) -> None:
        self._emit('request', record)

    def _take_injection(self, method: str, path: str) -> Injection | None:
        for injection in self.injections:
            if injection.matches(method, path):
                injection.count -= 1
                return injection
        return None

    def requests_matching(self, method: str, path_regex: str) -> list[RecordedRequest]:
        pattern = re.compile(path_regex)
        return [r for r in self.requests if method in ('*', r.method) and pattern.search(r.path)]

    def inject_status(
        self,
        method: str,
        path_regex: str,
        status: int,
        body: Any = None,
        count: int = 1,
        *,
        headers: dict[str, str] | None = None,
    ) -> Injection:
        """Answer the next `count` matching requests with `status` and `body` (default: a Discord error body)."""
        if body is None:
            body = {
                403: {'message': 'Missing Permissions', 'code': 50013},
                404: {'message': 'Unknown Message', 'code': 10008},
            }.get(status, {'message': f'{status}: injected', 'code': 0})
        injection = Injection(method.upper(), re.compile(path_regex), status, body, count, dict(headers or {}))
        self.injections.append(injection)
        return injection

    def inject_429(
        self, method: str, path_regex: str, retry_after: float = 0.05, count: int = 1, *, is_global: bool = False
    ) -> Injection:
        """A rate limit: JSON `retry_after` and a `Via` header, so discord.py sleeps and retries (not a Cloudflare ban)."""
        body = {'message': 'You are being rate limited.', 'retry_after': retry_after, 'global': is_global}
        headers = {
            'Via': '1.1 google',
            'Retry-After': str(max(1, round(retry_after))),
            'X-RateLimit-Scope': 'global' if is_global else 'user',
        }
        if is_global:
            headers['X-RateLimit-Global'] = 'true'
        return self.inject_status(method, path_regex, 429, body, count, headers=headers)

    def rate_limit(self, method: str, path_regex: str, limit: int, per_seconds: float) -> RateLimit:
        """Enforce a Discord per-route limit from now on: `limit` requests per `per_seconds` for each value of the
        regex's groups. Answers carry the real `X-RateLimit-*` headers (so discord.py paces itself), and a request
        over the limit gets Discord's 429 (JSON `retry_after`, `Retry-After`, `X-RateLimit-Scope: user`)."""
        limit_ = RateLimit(method.upper(), re.compile(path_regex), limit, per_seconds)
        self.rate_limits.append(limit_)
        return limit_

    def limit_channel_messages(self, limit: int = 5, per_seconds: float = 5.0) -> RateLimit:
        """Discord's limit on a bot's new messages in one channel: 5 per 5 s per channel."""
        return self.rate_limit('POST', r'^/channels/(\d+)/messages$', limit, per_seconds)

    def _take_rate_limit(self, method: str, path: str) -> tuple[bool, int, int, float] | None:
        """(allowed, limit, left in the window, seconds until it ends) of the first limit on this route; None: unlimited."""
        for limit in self.rate_limits:
            key = limit.key(method, path)
            if key is not None:
                allowed, remaining, reset_after = limit.take(key, time.monotonic())
                return allowed, limit.limit, remaining, reset_after
        return None

    def inject_error_after_saving(
        self, method: str, path_regex: str, status: int = 500, body: Any = None, count: int = 1
    ) -> Injection:
        """Carry out the next `count` matching requests (save the message, apply the edit), then answer `status`.

        The bot cannot tell this from a request that failed: Discord stored the message and the 5xx came on
        the way back. discord.py retries a 500, 502, 504 or 524 by itself (after 1 s, 3 s, …), other 5xx not.
        """
        if body is None:
            body = {'message': f'{status}: injected after saving', 'code': 0}
        injection = Injection(method.upper(), re.compile(path_regex), status, body, count, after_effect=True)
        self.injections.append(injection)
        return injection

    def inject_delay(self, method: str, path_regex: str, seconds: float, count: int = 1) -> Injection:
        """Answer normally, but only after `seconds` (a slow Discord)."""
        injection = Injection(method.upper(), re.compile(path_regex), None, None, count, delay=seconds)
        self.injections.append(injection)
        return injection

    def assert_no_unknown_routes(self) -> None:
        if self.unknown_requests:
            raise FakeDiscordError(f'the bot called routes the fake does not know: {self.unknown_requests}')

    # -- world accessors and edits ----------------------------------------------------------------------------

    def _user(self, user: UserLike) -> FakeUser:
        if isinstance(user, FakeMember):
            return user.user
        if isinstance(user, FakeUser):
            return user
        return self.world.users[int(user)]

    def _user_id(self, user: UserLike) -> int:
        return self._user(user).id

    def _channel(self, channel: ChannelLike) -> FakeChannel:
        return channel if isinstance(channel, FakeChannel) else self.world.channels[int(channel)]

    def _channel_id(self, channel: ChannelLike) -> int:
        return self._channel(channel).id

    def _message(self, message: MessageLike) -> FakeMessage:
        found = self.world.messages.get(message.id if isinstance(message, FakeMessage) else int(message))
        if found is None:
            raise FakeDiscordError(f'no such message: {message!r}')
        return found

    def message(self, message_id: int) -> FakeMessage:
        return self._message(message_id)

    def messages_in(self, channel: ChannelLike) -> list[FakeMessage]:
        """Visible (non-deleted, non-ephemeral) messages of a channel, oldest first."""
        return self.world.visible_messages(self._channel_id(channel))

    def bot_messages(self, channel: ChannelLike | None = None) -> list[FakeMessage]:
        messages = (
            self.messages_in(channel) if channel is not None else [m for m in self.world.messages.values() if not m.deleted]
        )
        return [m for m in messages if m.author.id == self.bot_user.id and not m.ephemeral]

    @property
    def ephemeral_messages(self) -> list[FakeMessage]:
        return [m for m in self.world.messages.values() if m.ephemeral and not m.deleted]

    def dm_channel(self, user: UserLike) -> FakeChannel:
        return self.world.dm_channel(self._user(user))

    def member(self, user: UserLike, guild: FakeGuild | None = None) -> FakeMember:
        return (guild or self.guild).members[self._user_id(user)]

    def set_privileged_intents(self, *, members: bool = True, presences: bool = True, message_content: bool = True) -> None:
        """The developer-portal switches: identifying with a switched-off privileged intent closes with 4014."""
        value = 0
        value |= Intents.GUILD_MEMBERS if members else 0
        value |= Intents.GUILD_PRESENCES if presences else 0
        value |= Intents.MESSAGE_CONTENT if message_content else 0
        self.world.application.privileged_intents = value

    async def add_user(self, username: str, *, guild: FakeGuild | None = None, roles: Iterable[FakeRole] = ()) -> FakeUser:
        """A new user who joins `guild` (default: the main guild); GUILD_MEMBER_ADD is sent."""
        user = self.world.add_user(username)
        target = guild or self.guild
        member = self.world.add_member(target, user, roles=list(roles))
        await self.gateway.broadcast(
            'GUILD_MEMBER_ADD', lambda s: dict(member.payload(), guild_id=str(target.id)), in_guild=True
        )
        return user

    async def add_guild(
        self, name: str, *, members: Iterable[UserLike] = (), channels: Iterable[str] = ('general',)
    ) -> FakeGuild:
        """A new guild the bot is in; sends GUILD_CREATE to connected sessions (as when the bot is invited)."""
        guild = self.world.add_guild(name)
        for user in members:
            self.world.add_member(guild, self._user(user))
        for channel in channels:
            self.world.add_channel(guild, channel)
        await self.gateway.broadcast(
            'GUILD_CREATE',
            lambda s: self.world.guild_create_payload(guild, with_members=s.has_intent(Intents.GUILD_MEMBERS)),
            in_guild=True,
        )
        return guild

    async def add_channel(self, name: str, *, guild: FakeGuild | None = None) -> FakeChannel:
        target = guild or self.guild
        channel = self.world.add_channel(target, name)
        await self.gateway.broadcast('CHANNEL_CREATE', lambda s: channel.payload(), in_guild=True)
        return channel

    async def set_channel_permissions(
        self, channel: ChannelLike, target: FakeRole | UserLike, *, allow: int = 0, deny: int = 0
    ) -> None:
        """Set a permission overwrite (role or member) on a channel; CHANNEL_UPDATE is sent."""
        ch = self._channel(channel)
        kind, target_id = (0, target.id) if isinstance(target, FakeRole) else (1, self._user_id(target))
        ch.overwrites = [o for o in ch.overwrites if (o.type, o.id) != (kind, target_id)]
        ch.overwrites.append(Overwrite(id=target_id, type=kind, allow=allow, deny=deny))
        await self.gateway.broadcast('CHANNEL_UPDATE', lambda s: ch.payload(), in_guild=True)

    async def set_premium_tier(self, tier: int, *, guild: FakeGuild | None = None) -> None:
        """Boost level 0-3; the upload limit follows it as discord.py's `Guild.filesize_limit` assumes.

        Setting `guild.filesize_limit` directly instead models a stricter limit than discord.py computes (the
        interaction's `attachment_size_limit` still reports the fake's value).
        """
        target = guild or self.guild
        target.premium_tier = tier
        target.filesize_limit = {0: 10 * 1024 * 1024, 1: 10 * 1024 * 1024, 2: 50 * 1024 * 1024, 3: 100 * 1024 * 1024}[tier]
        await self.gateway.broadcast('GUILD_UPDATE', lambda s: target.payload(), in_guild=True)

    async def set_role_permissions(self, role: FakeRole, permissions: int) -> None:
        role.permissions = permissions
        guild = next(g for g in self.world.guilds.values() if role.id in g.roles)
        await self.gateway.broadcast(
            'GUILD_ROLE_UPDATE', lambda s: {'guild_id': str(guild.id), 'role': role.payload()}, in_guild=True
        )

    async def set_member_roles(self, user: UserLike, roles: Iterable[FakeRole], *, guild: FakeGuild | None = None) -> None:
        target = guild or self.guild
        member = target.members[self._user_id(user)]
        member.role_ids = [r.id for r in roles]
        await self.gateway.broadcast(
            'GUILD_MEMBER_UPDATE', lambda s: dict(member.payload(), guild_id=str(target.id)), in_guild=True
        )

    # -- publishing (shared by REST and verbs) ----------------------------------------------------------------

    async def _dispatch_message_event(
        self, message: FakeMessage, event: str, data: dict[str, Any], *, reaction: bool = False
    ) -> None:
        if message.ephemeral:
            return
        if message.guild_id is not None:
            data = dict(data, guild_id=str(message.guild_id))
        await self.gateway.broadcast(event, lambda s: data, in_guild=message.guild_id is not None)

    def _payload_for(self, session: GatewaySession, message: FakeMessage) -> dict[str, Any]:
        return self.world.message_payload(message, gateway=True, content_intent=session.has_intent(Intents.MESSAGE_CONTENT))

    async def _publish_message(self, message: FakeMessage) -> None:
        self.world.store_message(message)
        self._emit('message_create', message)
        if not message.ephemeral:
            await self.gateway.broadcast(
                'MESSAGE_CREATE', lambda s: self._payload_for(s, message), in_guild=message.guild_id is not None
            )

    async def _publish_edit(self, message: FakeMessage) -> None:
        self._emit('message_update', message)
        if not message.ephemeral:
            await self.gateway.broadcast(
                'MESSAGE_UPDATE', lambda s: self._payload_for(s, message), in_guild=message.guild_id is not None
            )

    async def _publish_delete(self, message: FakeMessage) -> None:
        message.deleted = True
        self._emit('message_delete', message)
        await self._dispatch_message_event(
            message, 'MESSAGE_DELETE', {'id': str(message.id), 'channel_id': str(message.channel_id)}
        )

    def _reaction_event(self, message: FakeMessage, key: str, user: FakeUser, *, add: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            'user_id': str(user.id),
            'channel_id': str(message.channel_id),
            'message_id': str(message.id),
            'emoji': emoji_payload(key),
            'burst': False,
            'type': 0,
        }
        if add:
            data['message_author_id'] = str(message.author.id)
            data['burst_colors'] = []
            guild = self.world.guilds.get(message.guild_id) if message.guild_id else None
            member = guild.members.get(user.id) if guild else None
            if member is not None:
                data['member'] = member.payload()
        return data

    async def _publish_reaction_add(self, message: FakeMessage, key: str, user: FakeUser) -> None:
        reaction = message.reactions.setdefault(key, FakeReaction(emoji=emoji_payload(key)))
        if user.id in reaction.user_ids:
            return
        reaction.user_ids.append(user.id)
        self._emit('reaction_add', (message, key, user))
        await self._dispatch_message_event(
            message, 'MESSAGE_REACTION_ADD', self._reaction_event(message, key, user, add=True)
        )

    async def _publish_reaction_remove(self, message: FakeMessage, key: str, user: FakeUser) -> None:
        reaction = message.reactions.get(key)
        if reaction is None or user.id not in reaction.user_ids:
            return
        reaction.user_ids.remove(user.id)
        self._emit('reaction_remove', (message, key, user))
        await self._dispatch_message_event(
            message, 'MESSAGE_REACTION_REMOVE', self._reaction_event(message, key, user, add=False)
        )

    # -- application commands ---------------------------------------------------------------------------------

    NAME_RE = re.compile(r"^[-_'\w]{1,32}$")

    def _validate_command(self, command: dict[str, Any]) -> dict[str, Any]:
        """Discord's checks on command names, descriptions and options, as Invalid Form Body errors."""
        errors: dict[str, Any] = {}

        def err(code: str, message: str) -> dict[str, Any]:
            return {'_errors': [{'code': code, 'message': message}]}

        kind = command.get('type', 1)
        name = command.get('name') or ''
        if kind == 1 and (not self.NAME_RE.match(name) or name != name.lower()):
            errors['name'] = err('APPLICATION_COMMAND_INVALID_NAME', 'Command name is invalid')
        elif not 1 <= len(name) <= 32:
            errors['name'] = err('BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 32 in length.')
        if kind == 1 and not 1 <= len(command.get('description') or '') <= 100:
            errors['description'] = err('BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 100 in length.')

        def check_options(options: list[dict[str, Any]]) -> dict[str, Any]:
            found: dict[str, Any] = {}
            if len(options) > 25:
                return err('BASE_TYPE_MAX_LENGTH', 'Must be 25 or fewer in length.')
            seen_optional = False
            for index, option in enumerate(options):
                where: dict[str, Any] = {}
                option_name = option.get('name') or ''
                if not self.NAME_RE.match(option_name) or option_name != option_name.lower():
                    where['name'] = err('APPLICATION_COMMAND_INVALID_NAME', 'Command name is invalid')
                if not 1 <= len(option.get('description') or '') <= 100:
                    where['description'] = err('BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 100 in length.')
                if len(option.get('choices') or []) > 25:
                    where['choices'] = err('BASE_TYPE_MAX_LENGTH', 'Must be 25 or fewer in length.')
                if option.get('type') in (1, 2):
                    nested = check_options(option.get('options') or [])
                    if nested:
                        where['options'] = nested
                elif option.get('required'):
                    if seen_optional:
                        where['required'] = err(
                            'APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID',
                            'Required options must be placed before non-required options',
                        )
                else:
                    seen_optional = True
                if where:
                    found[str(index)] = where
            return found

        option_errors = check_options(command.get('options') or [])
        if option_errors:
            errors['options'] = option_errors
        return errors

    def _replace_commands(
        self, scope: int | None, commands: list[dict[str, Any]], *, keep_existing: bool = False
    ) -> dict[tuple[str, int], dict[str, Any]]:
        """Bulk overwrite; a command keeps its id when its name and type are unchanged, as on Discord."""
        old = {(c['name'], c.get('type', 1)): c for c in self.commands.get(scope, {}).values()}
        stored: dict[tuple[str, int], dict[str, Any]] = {}
        for command in commands:
            key = (command['name'], command.get('type', 1))
            previous = old.get(key)
            if keep_existing and previous is not None and command is previous:
                stored[key] = previous
                continue
            entry: dict[str, Any] = {
                'id': previous['id'] if previous else str(self.world.snowflake()),
                'application_id': str(self.world.application.id),
                'version': str(self.world.snowflake()),
                'type': key[1],
                'name': command['name'],
                'description': command.get('description', ''),
                'options': command.get('options') or [],
                'default_member_permissions': command.get('default_member_permissions'),
                'dm_permission': command.get('dm_permission', True),
                'contexts': command.get('contexts'),
                'integration_types': command.get('integration_types') or [0],
                'nsfw': command.get('nsfw', False),
                'name_localizations': command.get('name_localizations'),
                'description_localizations': command.get('description_localizations'),
            }
            if scope is not None:
                entry['guild_id'] = str(scope)
            stored[key] = entry
        self.commands[scope] = {int(c['id']): c for c in stored.values()}
        if not keep_existing:
            self.syncs.append((scope, [c['name'] for c in commands]))
        self._emit('commands_synced', scope)
        return stored

    def synced_command(self, name: str, *, guild: FakeGuild | None = None, type: int = 1) -> dict[str, Any] | None:
        """A synced command by name: the guild's own first (if `guild`), then global."""
        scopes: list[int | None] = [guild.id, None] if guild is not None else [None]
        for scope in scopes:
            for command in self.commands.get(scope, {}).values():
                if command['name'] == name and command.get('type', 1) == type:
                    return command
        return None

    # -- interactions -----------------------------------------------------------------------------------------

    def _interaction_message(
        self, record: InteractionRecord, fields: dict[str, Any], *, flags: int, initial: bool
    ) -> FakeMessage:
        """A message created through an interaction token: authored by the bot, `webhook_id` = the app's id."""
        user = self.world.users[record.user_id]
        metadata: dict[str, Any] = {
            'id': str(record.id),
            'type': record.type,
            'user': user.payload(),
            'authorizing_integration_owners': record.payload.get('authorizing_integration_owners', {}),
        }
        if record.type == 2:
            metadata['name'] = record.data.get('name')
            metadata['command_type'] = record.data.get('type', 1)
        if record.message_id is not None:
            metadata['interacted_message_id'] = str(record.message_id)
        if not initial and record.original_message_id is not None:
            metadata['original_response_message_id'] = str(record.original_message_id)
        message_type = MessageType.DEFAULT
        if initial and record.type == 2:
            message_type = (
                MessageType.CHAT_INPUT_COMMAND if record.data.get('type', 1) == 1 else MessageType.CONTEXT_MENU_COMMAND
            )
        return FakeMessage(
            id=self.world.snowflake(),
            channel_id=record.channel_id,
            guild_id=record.guild_id,
            author=self.bot_user,
            type=message_type,
            flags=flags,
            webhook_id=self.world.application.id,
            application_id=self.world.application.id,
            interaction_metadata=metadata,
            **fields,
        )

    def _interaction_answered(self, record: InteractionRecord) -> None:
        self._emit('interaction_response', record)

    async def _dispatch_interaction(
        self,
        kind: int,
        data: dict[str, Any],
        user: UserLike,
        channel: ChannelLike,
        message: FakeMessage | None = None,
    ) -> InteractionRecord:
        who = self._user(user)
        ch = self._channel(channel)
        guild = self.world.guild_of(ch)
        if guild is not None and who.id not in guild.members:
            raise FakeDiscordError(f'{who.username} is not a member of {guild.name}')
        interaction_id = self.world.snowflake()
        token = 'aW50ZXJhY3Rpb246' + secrets.token_urlsafe(48)
        user_perms = self.world.permissions_in(ch, who.id)
        app_perms = self.world.permissions_in(ch, self.bot_user.id)
        channel_payload = dict(ch.payload(), permissions=str(user_perms))
        payload: dict[str, Any] = {
            'id': str(interaction_id),
            'application_id': str(self.world.application.id),
            'type': kind,
            'data': data,
            'channel_id': str(ch.id),
            'channel': channel_payload,
            'token': token,
            'version': 1,
            'locale': 'en-US',
            'app_permissions': str(app_perms),
            'entitlements': [],
            'entitlement_sku_ids': [],
            'attachment_size_limit': guild.filesize_limit if guild else 10 * 1024 * 1024,
            'context': 0 if guild else 1,
        }
        if guild is not None:
            payload.update(
                guild_id=str(guild.id),
                guild={'id': str(guild.id), 'locale': guild.preferred_locale, 'features': []},
                guild_locale=guild.preferred_locale,
                member=guild.members[who.id].payload(permissions=user_perms),
                authorizing_integration_owners={'0': str(guild.id)},
            )
        else:
            payload.update(user=who.payload(), authorizing_integration_owners={'0': '0'})
        if message is not None:
            payload['message'] = self.world.message_payload(message, gateway=True)
        record = InteractionRecord(
            id=interaction_id,
            token=token,
            type=kind,
            user_id=who.id,
            channel_id=ch.id,
            guild_id=guild.id if guild else None,
            data=data,
            payload=payload,
            message_id=message.id if message else None,
        )
        self.interactions[interaction_id] = record
        self.interactions_by_token[token] = record
        self._emit('interaction_create', record)
        await self.gateway.broadcast('INTERACTION_CREATE', lambda s: payload, in_guild=guild is not None)
        return record

    def _check_component(self, message: FakeMessage, custom_id: str, kinds: set[int]) -> dict[str, Any]:
        component = message.component(custom_id)
        if message.deleted:
            raise FakeDiscordError('cannot use components on a deleted message')
        if component is None:
            raise FakeDiscordError(f'message {message.id} has no component {custom_id!r}; it has {message.custom_ids()}')
        if component.get('type') not in kinds:
            raise FakeDiscordError(f'component {custom_id!r} is type {component.get("type")}, not one of {sorted(kinds)}')
        if component.get('disabled'):
            raise FakeDiscordError(f'component {custom_id!r} is disabled')
        if message.author.id != self.bot_user.id:
            raise FakeDiscordError('components of messages from others do not reach this bot')
        return component

    # -- test-side verbs --------------------------------------------------------------------------------------

    async def send_user_message(
        self,
        channel: ChannelLike,
        author: UserLike,
        content: str = '',
        attachments: Iterable[FileLike] | None = None,
        reply_to: MessageLike | None = None,
        *,
        embeds: list[dict[str, Any]] | None = None,
    ) -> FakeMessage:
        """A user posts a message (files as (filename, bytes[, content_type])); MESSAGE_CREATE goes to the bot."""
        self._verb()
        ch = self._channel(channel)
        user = self._user(author)
        guild = self.world.guild_of(ch)
        if guild is not None:
            if user.id not in guild.members:
                raise FakeDiscordError(f'{user.username} is not a member of {guild.name}')
            if not guild.channel_permissions(ch, user.id) & Permissions.SEND_MESSAGES:
                raise FakeDiscordError(f'{user.username} may not send messages in #{ch.name}')
        message = FakeMessage(
            id=self.world.snowflake(),
            channel_id=ch.id,
            guild_id=ch.guild_id,
            author=user,
            content=content,
            embeds=list(embeds or []),
            nonce=str(self.world.snowflake()),
        )
        for item in attachments or []:
            if isinstance(item, FakeAttachment):
                attachment = item
            else:
                filename, data = item[0], item[1]
                content_type = item[2] if len(item) > 2 else None  # type: ignore[misc]
                attachment = self.world.new_attachment(ch.id, filename, data, content_type)
            self._attachments[attachment.id] = attachment
            message.attachments.append(attachment)
        if reply_to is not None:
            ref = self._message(reply_to)
            message.type = MessageType.REPLY
            message.reference = {'type': 0, 'channel_id': str(ref.channel_id), 'message_id': str(ref.id)}
            if ref.guild_id:
                message.reference['guild_id'] = str(ref.guild_id)
        self.world.parse_mentions(message)
        await self._publish_message(message)
        return message

    async def edit_user_message(self, message: MessageLike, content: str) -> FakeMessage:
        self._verb()
        msg = self._message(message)
        msg.history.append(msg.snapshot())
        msg.content = content
        msg.edited_timestamp = now_iso()
        self.world.parse_mentions(msg)
        await self._publish_edit(msg)
        return msg

    async def delete_user_message(self, message: MessageLike) -> None:
        self._verb()
        await self._publish_delete(self._message(message))

    async def add_reaction(self, message: MessageLike, emoji: str, user: UserLike) -> None:
        """A user reacts (MESSAGE_REACTION_ADD with `type` 0 and the member)."""
        self._verb()
        await self._publish_reaction_add(self._message(message), emoji_key(emoji), self._user(user))

    async def remove_reaction(self, message: MessageLike, emoji: str, user: UserLike) -> None:
        self._verb()
        await self._publish_reaction_remove(self._message(message), emoji_key(emoji), self._user(user))

    async def click_button(self, message: MessageLike, custom_id: str, user: UserLike) -> InteractionRecord:
        """A user clicks a button; refused if the message has no such enabled button (a person could not click it)."""
        self._verb()
        msg = self._message(message)
        self._check_component(msg, custom_id, {2})
        data = {'custom_id': custom_id, 'component_type': 2}
        return await self._dispatch_interaction(3, data, user, msg.channel_id, msg)

    async def select(self, message: MessageLike, custom_id: str, values: list[Any], user: UserLike) -> InteractionRecord:
        """A user picks `values` in a select menu (string values, or users/roles/channels for typed selects)."""
        self._verb()
        msg = self._message(message)
        component = self._check_component(msg, custom_id, {3, 5, 6, 7, 8})
        kind = component['type']
        data: dict[str, Any] = {'custom_id': custom_id, 'component_type': kind}
        if kind == 3:
            allowed = {o['value'] for o in component.get('options', [])}
            bad = [v for v in values if v not in allowed]
            if bad:
                raise FakeDiscordError(f'{bad} are not options of {custom_id!r}')
            data['values'] = [str(v) for v in values]
        else:
            resolved: dict[str, dict[str, Any]] = {}
            ids = []
            for value in values:
                ids.append(self._resolve_into(resolved, value, msg.channel_id))
            data['values'] = ids
            data['resolved'] = resolved
        low, high = component.get('min_values', 1), component.get('max_values', 1)
        if not low <= len(values) <= high:
            raise FakeDiscordError(f'{custom_id!r} takes {low}..{high} values, got {len(values)}')
        return await self._dispatch_interaction(3, data, user, msg.channel_id, msg)

    def _resolve_into(self, resolved: dict[str, dict[str, Any]], value: Any, channel_id: int) -> str:
        """Add a user/member/role/channel/attachment to an interaction's `resolved` map; returns its id."""
        channel = self.world.channels[channel_id]
        guild = self.world.guild_of(channel)
        if isinstance(value, FakeRole):
            resolved.setdefault('roles', {})[str(value.id)] = value.payload()
            return str(value.id)
        if isinstance(value, FakeChannel):
            entry = dict(value.payload(), permissions=str(self.world.permissions_in(value, self.bot_user.id)))
            resolved.setdefault('channels', {})[str(value.id)] = entry
            return str(value.id)
        if isinstance(value, FakeAttachment) or isinstance(value, tuple):
            if isinstance(value, tuple):
                content_type = value[2] if len(value) > 2 else None
                value = self.world.new_attachment(channel_id, value[0], value[1], content_type, ephemeral=True)
            self._attachments[value.id] = value
            resolved.setdefault('attachments', {})[str(value.id)] = value.payload()
            return str(value.id)
        user = self._user(value)
        resolved.setdefault('users', {})[str(user.id)] = user.payload()
        if guild is not None and user.id in guild.members:
            member = guild.members[user.id].payload(with_user=False, permissions=self.world.permissions_in(channel, user.id))
            resolved.setdefault('members', {})[str(user.id)] = member
        return str(user.id)

    def _build_options(
        self,
        schema: list[dict[str, Any]],
        values: dict[str, Any],
        resolved: dict[str, dict[str, Any]],
        channel_id: int,
        focused: str | None,
    ) -> list[dict[str, Any]]:
        out = []
        unknown = set(values) - {o['name'] for o in schema}
        if unknown:
            raise FakeDiscordError(f'unknown options {sorted(unknown)}; the command has {[o["name"] for o in schema]}')
        for option in schema:
            name, kind = option['name'], option['type']
            if name not in values:
                if option.get('required') and focused is None:
                    raise FakeDiscordError(f'option {name!r} is required')
                continue
            value = values[name]
            entry: dict[str, Any] = {'name': name, 'type': kind}
            if name == focused:
                entry['focused'] = True
                entry['value'] = str(value)
            elif kind in (6, 7, 8, 9, 11):
                entry['value'] = self._resolve_into(resolved, value, channel_id)
            elif kind == 4:
                entry['value'] = int(value)
            elif kind == 10:
                entry['value'] = float(value)
            elif kind == 5:
                entry['value'] = bool(value)
            else:
                entry['value'] = str(value)
            choices = option.get('choices')
            if choices and name != focused and entry['value'] not in [c['value'] for c in choices]:
                raise FakeDiscordError(f'{value!r} is not a choice of {name!r}')
            out.append(entry)
        return out

    def _command_data(
        self, name: str, options: dict[str, Any] | None, channel: FakeChannel, user: FakeUser, focused: str | None = None
    ) -> dict[str, Any]:
        parts = name.split()
        guild = self.world.guild_of(channel)
        command = self.synced_command(parts[0], guild=guild)
        if command is None:
            raise FakeDiscordError(
                f'/{parts[0]} was never synced; synced: {[c["name"] for s in self.commands.values() for c in s.values()]}'
            )
        if guild is None and (
            command.get('dm_permission') is False or (command.get('contexts') and 1 not in command['contexts'])
        ):
            raise FakeDiscordError(f'/{parts[0]} is not available in DMs')
        required = command.get('default_member_permissions')
        if guild is not None and required is not None:
            if int(required) & ~guild.channel_permissions(channel, user.id):
                raise FakeDiscordError(f'{user.username} lacks the permissions /{parts[0]} requires')
        resolved: dict[str, dict[str, Any]] = {}
        schema = command.get('options') or []
        nested: list[dict[str, Any]] = []
        container = nested
        for part in parts[1:]:
            sub = next((o for o in schema if o['name'] == part and o['type'] in (1, 2)), None)
            if sub is None:
                raise FakeDiscordError(f'/{name}: no subcommand {part!r}')
            holder: dict[str, Any] = {'name': part, 'type': sub['type'], 'options': []}
            container.append(holder)
            container = holder['options']
            schema = sub.get('options') or []
        container.extend(self._build_options(schema, dict(options or {}), resolved, channel.id, focused))
        data: dict[str, Any] = {
            'id': command['id'],
            'name': command['name'],
            'type': command.get('type', 1),
            'options': nested,
        }
        if command.get('guild_id'):
            data['guild_id'] = command['guild_id']
        if resolved:
            data['resolved'] = resolved
        return data

    async def invoke_slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        user: UserLike | None = None,
        channel: ChannelLike | None = None,
    ) -> InteractionRecord:
        """A user runs `/name` ('group sub' for subcommands); refused unless the bot synced it. Options by name."""
        self._verb()
        ch = self._channel(channel if channel is not None else self.channel)
        who = self._user(user if user is not None else self.alice)
        data = self._command_data(name, options, ch, who)
        return await self._dispatch_interaction(2, data, who, ch)

    async def autocomplete(
        self,
        name: str,
        options: dict[str, Any],
        focused: str,
        user: UserLike | None = None,
        channel: ChannelLike | None = None,
        timeout: float = 5.0,
    ) -> list[dict[str, Any]]:
        """Typing into option `focused`: dispatches an autocomplete interaction and returns the bot's choices."""
        self._verb()
        ch = self._channel(channel if channel is not None else self.channel)
        who = self._user(user if user is not None else self.alice)
        data = self._command_data(name, options, ch, who, focused=focused)
        record = await self._dispatch_interaction(4, data, who, ch)
        await self.wait_for_interaction_response(record, timeout)
        return record.autocomplete_choices or []

    async def submit_modal(
        self, record: InteractionRecord, values: dict[str, str], user: UserLike | None = None
    ) -> InteractionRecord:
        """Submit the modal the bot opened in answer to `record`, filling text inputs by custom_id."""
        self._verb()
        if record.modal is None:
            raise FakeDiscordError('the bot did not answer this interaction with a modal')

        def fill(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            out = []
            for item in items:
                if item.get('type') == 1:
                    out.append({'type': 1, 'components': fill(item.get('components', []))})
                elif item.get('type') == 18 and isinstance(item.get('component'), dict):
                    inner = fill([item['component']])
                    out.append({'type': 18, 'id': item.get('id', 0), 'component': inner[0]})
                elif item.get('type') == 4:
                    text = values.get(item['custom_id'], item.get('value') or '')
                    if item.get('required', True) and not text:
                        raise FakeDiscordError(f'text input {item["custom_id"]!r} is required')
                    if text and not item.get('min_length', 0) <= len(text) <= item.get('max_length', 4000):
                        raise FakeDiscordError(f'text input {item["custom_id"]!r}: length {len(text)} is out of bounds')
                    out.append(
                        {
                            'type': 4,
                            'id': item.get('id', 0),
                            'custom_id': item['custom_id'],
                            'value': text,
                        }
                    )
                elif item.get('type') == 3:
                    chosen = values.get(item['custom_id'], [])
                    out.append({'type': 3, 'id': item.get('id', 0), 'custom_id': item['custom_id'], 'values': list(chosen)})
            return out

        filled = fill(record.modal.get('components', []))
        data = {'custom_id': record.modal['custom_id'], 'components': filled}
        message = self.world.messages.get(record.message_id) if record.message_id else None
        return await self._dispatch_interaction(
            5, data, user if user is not None else record.user_id, record.channel_id, message
        )

    def expire_interaction(self, record: InteractionRecord) -> None:
        """Make the interaction's token dead, as 15 minutes later: followups and edits answer 401 / 50027."""
        record.expired = True

    def original_response(self, record: InteractionRecord) -> FakeMessage | None:
        return self.world.messages.get(record.original_message_id) if record.original_message_id else None

    def followups(self, record: InteractionRecord) -> list[FakeMessage]:
        return [self.world.messages[i] for i in record.followup_ids]

    async def disconnect_gateway(self, code: int = 4000) -> int:
        """Drop every gateway connection from the server side; discord.py reconnects and RESUMEs."""
        self._verb()
        return await self.gateway.disconnect(code)

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT, as Discord does before moving a session."""
        self._verb()
        await self.gateway.send_op(7)

    async def invalidate_session(self, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION; with `resumable=False` the client must IDENTIFY again."""
        self._verb()
        await self.gateway.send_op(9, resumable)


def point_discord_at(fake_or_url: FakeDiscord | str) -> Callable[[], None]:
    """Redirect discord.py's REST and gateway to the fake; returns a function that restores the old values.

    `Route.BASE` is read whenever a Route is built (so set it before `login()`), and a non-sharded client never
    asks `/gateway/bot`, so `DiscordWebSocket.DEFAULT_GATEWAY` must be set too.
    """
    import discord.gateway
    import discord.http

    http_url = fake_or_url.http_url if isinstance(fake_or_url, FakeDiscord) else fake_or_url.rstrip('/')
    ws_url = 'ws' + http_url[len('http') :] + '/'
    old_base, old_gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = http_url + API_PREFIX
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(ws_url)

    def restore() -> None:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    return restore


__all__ = [
    'FakeDiscord',
    'FakeDiscordError',
    'FakeEvent',
    'InteractionRecord',
    'MessageFlags',
    'point_discord_at',
]
