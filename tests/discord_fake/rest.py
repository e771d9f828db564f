"""The REST half of the fake: Discord API v10 routes under `/api/v10`, with Discord's headers, errors and limits.

Every request is recorded (method, path, JSON or `payload_json`, uploaded files, answer) so tests can assert on
what the bot asked for. Routes the fake does not know answer 404 and land in `FakeDiscord.unknown_requests`,
which the fixtures turn into test failures: a fake that silently accepts anything hides real bugs.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .state import (
    DISCORD_EPOCH_MS,
    FakeChannel,
    FakeGuild,
    FakeMessage,
    FakeReaction,
    Intents,
    MessageFlags,
    MessageType,
    Permissions,
    emoji_key,
    emoji_payload,
    image_size,
    now_iso,
)

if TYPE_CHECKING:
    from .server import FakeDiscord, InteractionRecord

API_PREFIX = '/api/v10'

# Typed request-storage keys where aiohttp has them (3.12+), plain strings before.
_RequestKey: Any = getattr(web, 'RequestKey', None)
RECORD: Any = _RequestKey('record', object) if _RequestKey else 'record'
BODY: Any = _RequestKey('body', object) if _RequestKey else 'body'
FILES: Any = _RequestKey('files', object) if _RequestKey else 'files'
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DiscordHTTPError(Exception):
    """Raised by a route to answer with a Discord-style JSON error (`{'message', 'code', 'errors'?}`)."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f'{status} {code} {message}')
        self.status = status
        self.body: dict[str, Any] = {'message': message, 'code': code}
        if errors:
            self.body['errors'] = errors


def unknown(kind: str, code: int) -> DiscordHTTPError:
    return DiscordHTTPError(404, code, f'Unknown {kind}')


def missing_permissions() -> DiscordHTTPError:
    return DiscordHTTPError(403, 50013, 'Missing Permissions')


def form_error(errors: dict[str, Any]) -> DiscordHTTPError:
    return DiscordHTTPError(400, 50035, 'Invalid Form Body', errors)


def field_error(code: str, message: str) -> dict[str, Any]:
    return {'_errors': [{'code': code, 'message': message}]}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer whose Content-Type is exactly `application/json`: discord.py compares the string exactly."""
    all_headers = {'Content-Type': 'application/json'}
    all_headers.update(headers or {})
    return web.Response(body=json.dumps(data).encode(), status=status, headers=all_headers)


def no_content() -> web.Response:
    return web.Response(status=204)


@dataclass
class UploadedFile:
    """One `files[n]` part of a multipart request, bytes as received."""

    field: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """A request the bot made, as the fake saw it, and what the fake answered."""

    seq: int
    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[UploadedFile]
    headers: dict[str, str]
    time: float = field(default_factory=time.monotonic)
    status: int | None = None
    response: Any = None
    injected: bool = False
    known: bool = True

    def __repr__(self) -> str:
        return f'<{self.method} {self.path} -> {self.status}>'


@dataclass
class Injection:
    """A canned answer (or delay) for the next `count` requests matching a method and a path regex.

    `after_effect`: the request is carried out first (a message saved, an edit applied) and only then
    answered with `status`, as when Discord stores a message and the answer is lost to a 5xx on the way back.
    """

    method: str
    pattern: re.Pattern[str]
    status: int | None
    body: Any
    count: int
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    after_effect: bool = False

    def matches(self, method: str, path: str) -> bool:
        return self.count > 0 and self.method in ('*', method) and self.pattern.search(path) is not None


@dataclass
class RateLimit:
    """One of Discord's per-route limits: at most `limit` requests per `per_seconds`, counted per key.

    The key is the path regex's groups (`r'^/channels/(\\d+)/messages$'`: per channel, as Discord counts a route
    by its major parameter). Windows are fixed, as Discord's `X-RateLimit-Reset` says: the first request after a
    window ended opens the next one; a request over the limit is answered 429 and counts for nothing.
    """

    method: str
    pattern: re.Pattern[str]
    limit: int
    per_seconds: float
    windows: dict[tuple[str, ...], tuple[float, int]] = field(default_factory=dict)  # key -> (ends at, used)
    refused: int = 0

    def key(self, method: str, path: str) -> tuple[str, ...] | None:
        if self.method not in ('*', method):
            return None
        match = self.pattern.search(path)
        return None if match is None else match.groups()

    def take(self, key: tuple[str, ...], now: float) -> tuple[bool, int, float]:
        """(allowed, requests left in this window, seconds until it ends)."""
        ends, used = self.windows.get(key, (0.0, 0))
        if now >= ends:
            ends, used = now + self.per_seconds, 0
        if used >= self.limit:
            self.refused += 1
            return False, 0, ends - now
        self.windows[key] = (ends, used + 1)
        return True, self.limit - used - 1, ends - now


def limited_headers(route_key: str, limit: int, remaining: int, reset_after: float) -> dict[str, str]:
    """Discord's headers for a route with a real limit: discord.py reads them and waits by itself when none are left."""
    return dict(
        ratelimit_headers(route_key),
        **{
            'X-RateLimit-Limit': str(limit),
            'X-RateLimit-Remaining': str(remaining),
            'X-RateLimit-Reset': f'{time.time() + reset_after:.3f}',
            'X-RateLimit-Reset-After': f'{reset_after:.3f}',
        },
    )


def ratelimit_headers(route_key: str, *, remaining: int = 49) -> dict[str, str]:
    """Rate-limit headers with Remaining > 0: discord.py sleeps until reset when it reads '0'."""
    return {
        'X-RateLimit-Limit': '50',
        'X-RateLimit-Remaining': str(remaining),
        'X-RateLimit-Reset': f'{time.time() + 1.0:.3f}',
        'X-RateLimit-Reset-After': '1.000',
        'X-RateLimit-Bucket': format(abs(hash(route_key)) & 0xFFFFFFFFFFFF, 'x'),
    }


COMPONENTS_V2_FLAG = 1 << 15
SELECT_TYPES = {3, 5, 6, 7, 8}


def validate_components(components: list[dict[str, Any]], flags: int) -> dict[str, Any]:
    """Discord's checks on message components that bots most often trip; returns form errors (empty if fine)."""
    errors: dict[str, Any] = {}
    seen: set[str] = set()

    def check_item(item: dict[str, Any], where: dict[str, Any]) -> None:
        kind = item.get('type')
        custom_id = item.get('custom_id')
        if kind == 2:
            style = item.get('style')
            if style == 5:
                if not item.get('url') or custom_id:
                    where['url'] = field_error('BUTTON_COMPONENT_INVALID_URL', 'A link button needs a url and no custom_id.')
            elif style != 6 and not custom_id:
                where['custom_id'] = field_error('BASE_TYPE_REQUIRED', 'This field is required')
            if len(item.get('label') or '') > 80:
                where['label'] = field_error('BASE_TYPE_MAX_LENGTH', 'Must be 80 or fewer in length.')
            if style != 6 and not item.get('label') and not item.get('emoji'):
                where['label'] = field_error('BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED', 'Label or emoji required.')
        elif kind in SELECT_TYPES:
            if not custom_id:
                where['custom_id'] = field_error('BASE_TYPE_REQUIRED', 'This field is required')
            if kind == 3 and not 1 <= len(item.get('options') or []) <= 25:
                where['options'] = field_error('BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 25 in length.')
        if custom_id is not None:
            if len(custom_id) > 100:
                where['custom_id'] = field_error('BASE_TYPE_MAX_LENGTH', 'Must be 100 or fewer in length.')
            elif custom_id in seen:
                where['custom_id'] = field_error(
                    'COMPONENT_CUSTOM_ID_DUPLICATED', 'Component custom id cannot be duplicated'
                )
            seen.add(custom_id)

    def walk(items: list[dict[str, Any]], node: dict[str, Any]) -> None:
        for index, item in enumerate(items):
            where: dict[str, Any] = {}
            check_item(item, where)
            children = item.get('components')
            if children:
                child_errors: dict[str, Any] = {}
                walk(children, child_errors)
                if child_errors:
                    where['components'] = child_errors
            for key in ('accessory', 'component'):
                if isinstance(item.get(key), dict):
                    sub: dict[str, Any] = {}
                    walk([item[key]], sub)
                    if sub:
                        where[key] = sub['0']
            if where:
                node[str(index)] = where

    if not flags & COMPONENTS_V2_FLAG:
        if len(components) > 5:
            return {'components': field_error('BASE_TYPE_MAX_LENGTH', 'Must be 5 or fewer in length.')}
        for index, row in enumerate(components):
            children = row.get('components') or []
            if row.get('type') != 1:
                errors[str(index)] = field_error('UNION_TYPE_CHOICES', 'Top-level components must be action rows.')
            elif not 1 <= len(children) <= 5:
                errors[str(index)] = {
                    'components': field_error('BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 5 in length.')
                }
            elif any(c.get('type') in SELECT_TYPES for c in children) and len(children) > 1:
                errors[str(index)] = {
                    'components': field_error(
                        'COMPONENT_LAYOUT_WIDTH_EXCEEDED', 'The specified component exceeds the maximum width'
                    )
                }
        if errors:
            return {'components': errors}
    node: dict[str, Any] = {}
    walk(components, node)
    return {'components': node} if node else {}


class RestApi:
    """Route handlers bound to one `FakeDiscord`; `register` adds them (and the catch-all) to an aiohttp app."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.world = fake.world

    # -- plumbing ---------------------------------------------------------------------------------------------

    def register(self, app: web.Application) -> None:
        p = API_PREFIX
        m = r'{message_id:\d+}'
        c = r'{channel_id:\d+}'
        routes: list[tuple[str, str, Handler]] = [
            ('GET', '/users/@me', self.get_me),
            ('POST', '/users/@me/channels', self.create_dm),
            ('GET', r'/users/{user_id:\d+}', self.get_user),
            ('GET', '/oauth2/applications/@me', self.get_application),
            ('GET', '/applications/@me', self.get_application),
            ('GET', '/gateway', self.get_gateway),
            ('GET', '/gateway/bot', self.get_gateway_bot),
            ('GET', f'/channels/{c}', self.get_channel),
            ('POST', f'/channels/{c}/typing', self.typing),
            ('POST', f'/channels/{c}/messages/bulk-delete', self.bulk_delete),
            ('GET', f'/channels/{c}/messages/pins', self.get_pins),
            ('PUT', f'/channels/{c}/messages/pins/{m}', self.pin),
            ('DELETE', f'/channels/{c}/messages/pins/{m}', self.unpin),
            ('GET', f'/channels/{c}/messages', self.get_messages),
            ('POST', f'/channels/{c}/messages', self.create_message),
            ('GET', f'/channels/{c}/messages/{m}', self.get_message),
            ('PATCH', f'/channels/{c}/messages/{m}', self.edit_message),
            ('DELETE', f'/channels/{c}/messages/{m}', self.delete_message),
            ('PUT', f'/channels/{c}/messages/{m}/reactions/{{emoji}}/@me', self.add_own_reaction),
            ('DELETE', f'/channels/{c}/messages/{m}/reactions/{{emoji}}/@me', self.remove_own_reaction),
            ('DELETE', f'/channels/{c}/messages/{m}/reactions/{{emoji}}/{{user_id:\\d+}}', self.remove_user_reaction),
            ('GET', f'/channels/{c}/messages/{m}/reactions/{{emoji}}', self.get_reactions),
            ('DELETE', f'/channels/{c}/messages/{m}/reactions/{{emoji}}', self.clear_emoji_reactions),
            ('DELETE', f'/channels/{c}/messages/{m}/reactions', self.clear_reactions),
            ('GET', r'/guilds/{guild_id:\d+}', self.get_guild),
            ('GET', r'/guilds/{guild_id:\d+}/channels', self.get_guild_channels),
            ('GET', r'/guilds/{guild_id:\d+}/roles', self.get_guild_roles),
            ('GET', r'/guilds/{guild_id:\d+}/members', self.get_guild_members),
            ('GET', r'/guilds/{guild_id:\d+}/members/{user_id:\d+}', self.get_guild_member),
            ('GET', r'/applications/{app_id:\d+}/commands', self.get_commands),
            ('PUT', r'/applications/{app_id:\d+}/commands', self.put_commands),
            ('POST', r'/applications/{app_id:\d+}/commands', self.post_command),
            ('GET', r'/applications/{app_id:\d+}/commands/{command_id:\d+}', self.get_command),
            ('PATCH', r'/applications/{app_id:\d+}/commands/{command_id:\d+}', self.patch_command),
            ('DELETE', r'/applications/{app_id:\d+}/commands/{command_id:\d+}', self.delete_command),
            ('GET', r'/applications/{app_id:\d+}/guilds/{guild_id:\d+}/commands', self.get_commands),
            ('PUT', r'/applications/{app_id:\d+}/guilds/{guild_id:\d+}/commands', self.put_commands),
            ('POST', r'/applications/{app_id:\d+}/guilds/{guild_id:\d+}/commands', self.post_command),
            ('GET', r'/applications/{app_id:\d+}/guilds/{guild_id:\d+}/commands/{command_id:\d+}', self.get_command),
            ('PATCH', r'/applications/{app_id:\d+}/guilds/{guild_id:\d+}/commands/{command_id:\d+}', self.patch_command),
            ('DELETE', r'/applications/{app_id:\d+}/guilds/{guild_id:\d+}/commands/{command_id:\d+}', self.delete_command),
            ('POST', r'/interactions/{interaction_id:\d+}/{token}/callback', self.interaction_callback),
            ('POST', r'/webhooks/{app_id:\d+}/{token}', self.webhook_execute),
            ('GET', r'/webhooks/{app_id:\d+}/{token}/messages/{message_id}', self.webhook_get_message),
            ('PATCH', r'/webhooks/{app_id:\d+}/{token}/messages/{message_id}', self.webhook_edit_message),
            ('DELETE', r'/webhooks/{app_id:\d+}/{token}/messages/{message_id}', self.webhook_delete_message),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, p + path, handler)
        app.router.add_route('*', p + '/{tail:.*}', self.unknown_route)
        app.router.add_get('/attachments/{channel_id}/{attachment_id}/{filename}', self.download_attachment)
        app.router.add_get('/media/{channel_id}/{attachment_id}/{filename}', self.download_attachment)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Record, authenticate, apply injections, then answer with Discord's headers and error format."""
        if not request.path.startswith(API_PREFIX + '/'):
            return await handler(request)
        path = request.path[len(API_PREFIX) :]
        body, files = await self._read_body(request)
        record = self.fake._record_request(request.method, path, dict(request.query), body, files, dict(request.headers))
        request[RECORD] = record
        request[BODY] = body
        request[FILES] = files
        route_key = (
            f'{request.method} {request.match_info.route.resource.canonical if request.match_info.route.resource else path}'
        )
        response: web.StreamResponse
        injection = self.fake._take_injection(request.method, path)
        if injection is not None and injection.delay:
            await asyncio.sleep(injection.delay)
        if injection is not None and injection.status is not None and not injection.after_effect:
            headers = dict(ratelimit_headers(route_key, remaining=0 if injection.status == 429 else 49))
            headers.update(injection.headers)
            record.injected = True
            record.status, record.response = injection.status, injection.body
            response = json_response(injection.body, injection.status, headers)
        elif (limited := self.fake._take_rate_limit(request.method, path)) is not None and not limited[0]:
            _, limit, _, reset_after = limited
            body = {'message': 'You are being rate limited.', 'retry_after': round(reset_after, 3), 'global': False}
            headers = limited_headers(route_key, limit, 0, reset_after)
            headers.update({'Retry-After': str(math.ceil(reset_after)), 'X-RateLimit-Scope': 'user', 'Via': '1.1 google'})
            record.status, record.response = 429, body
            response = json_response(body, 429, headers)
        else:
            try:
                if not self._is_token_route(path) and request.headers.get('Authorization') != f'Bot {self.world.token}':
                    raise DiscordHTTPError(401, 0, '401: Unauthorized')
                response = await handler(request)
            except DiscordHTTPError as exc:
                response = json_response(exc.body, exc.status)
                record.response = exc.body
            record.status = response.status
            if record.response is None and isinstance(response, web.Response) and response.body:
                try:
                    record.response = json.loads(response.body)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    record.response = None
            response.headers.update(ratelimit_headers(route_key))
            if limited is not None:
                response.headers.update(limited_headers(route_key, *limited[1:]))
            if injection is not None and injection.after_effect and response.status < 300:
                record.injected = True  # done, but the bot hears `injection.status` (record.response: what it missed)
                record.status = injection.status
                response = json_response(injection.body, injection.status or 500, ratelimit_headers(route_key))
        self.fake._request_finished(record)
        return response

    @staticmethod
    def _is_token_route(path: str) -> bool:
        """Interaction callbacks and webhook routes carry their token in the URL and no Authorization header."""
        return path.startswith('/interactions/') or path.startswith('/webhooks/')

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, list[UploadedFile]]:
        """JSON bodies as parsed JSON; multipart as `payload_json` plus the `files[n]` parts' bytes."""
        content_type = request.content_type
        if content_type == 'multipart/form-data':
            payload: Any = None
            files: list[UploadedFile] = []
            reader = await request.multipart()
            async for part in reader:
                if part is None or not hasattr(part, 'read'):
                    continue
                data = await part.read(decode=False)  # type: ignore[union-attr]
                name = part.name or ''  # type: ignore[union-attr]
                if name == 'payload_json':
                    payload = json.loads(data)
                else:
                    declared = part.headers.get('Content-Type')  # type: ignore[union-attr]
                    files.append(UploadedFile(name, part.filename or name, declared, bytes(data)))  # type: ignore[union-attr]
            return payload, files
        raw = await request.read()
        if not raw:
            return None, []
        if content_type == 'application/json':
            return json.loads(raw), []
        return raw.decode(errors='replace'), []

    async def unknown_route(self, request: web.Request) -> web.Response:
        request[RECORD].known = False
        self.fake.unknown_requests.append(request[RECORD])
        return json_response({'message': '404: Not Found', 'code': 0}, 404)

    async def download_attachment(self, request: web.Request) -> web.Response:
        attachment = self.fake._attachments.get(int(request.match_info['attachment_id']))
        if attachment is None:
            return web.Response(status=404, text='Not Found')
        return web.Response(body=attachment.data, content_type=attachment.content_type or 'application/octet-stream')

    # -- lookups ----------------------------------------------------------------------------------------------

    def _channel(self, request: web.Request) -> FakeChannel:
        channel = self.world.channels.get(int(request.match_info['channel_id']))
        if channel is None:
            raise unknown('Channel', 10003)
        if channel.guild_id is not None:
            guild = self.world.guilds[channel.guild_id]
            if not guild.channel_permissions(channel, self.world.bot_user.id) & Permissions.VIEW_CHANNEL:
                raise DiscordHTTPError(403, 50001, 'Missing Access')
        return channel

    def _message(self, request: web.Request, channel: FakeChannel) -> FakeMessage:
        message = self.world.messages.get(int(request.match_info['message_id']))
        if message is None or message.deleted or message.channel_id != channel.id or message.ephemeral:
            raise unknown('Message', 10008)
        return message

    def _guild(self, request: web.Request) -> FakeGuild:
        guild = self.world.guilds.get(int(request.match_info['guild_id']))
        if guild is None or self.world.bot_user.id not in guild.members:
            raise unknown('Guild', 10004)
        return guild

    def _require(self, channel: FakeChannel, permission: int) -> None:
        if not self.world.permissions_in(channel, self.world.bot_user.id) & permission:
            raise missing_permissions()

    def _rest_message(self, message: FakeMessage) -> dict[str, Any]:
        """REST message objects are blanked only if the portal switch for MESSAGE_CONTENT is off."""
        content_intent = bool(self.world.application.privileged_intents & Intents.MESSAGE_CONTENT)
        return self.world.message_payload(message, content_intent=content_intent)

    # -- users, application, gateway --------------------------------------------------------------------------

    async def get_me(self, request: web.Request) -> web.Response:
        data = self.world.bot_user.payload()
        data.update(verified=True, mfa_enabled=False, email=None, locale='en-US', bio='')
        return json_response(data)

    async def get_user(self, request: web.Request) -> web.Response:
        user = self.world.users.get(int(request.match_info['user_id']))
        if user is None:
            raise unknown('User', 10013)
        return json_response(user.payload())

    async def create_dm(self, request: web.Request) -> web.Response:
        body = request[BODY] or {}
        user = self.world.users.get(int(body.get('recipient_id', 0)))
        if user is None:
            raise unknown('User', 10013)
        if user.bot:
            raise DiscordHTTPError(400, 50007, 'Cannot send messages to this user')
        return json_response(self.world.dm_channel(user).payload())

    async def get_application(self, request: web.Request) -> web.Response:
        return json_response(self.world.application.payload())

    async def get_gateway(self, request: web.Request) -> web.Response:
        return json_response({'url': self.fake.gateway_url.rstrip('/')})

    async def get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {'total': 1000, 'remaining': 999, 'reset_after': 86_400_000, 'max_concurrency': 1}
        return json_response({'url': self.fake.gateway_url.rstrip('/'), 'shards': 1, 'session_start_limit': limit})

    # -- channels and guilds ----------------------------------------------------------------------------------

    async def get_channel(self, request: web.Request) -> web.Response:
        return json_response(self._channel(request).payload())

    async def typing(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self._require(channel, Permissions.SEND_MESSAGES)
        self.fake.typing_channels.append(channel.id)
        return no_content()

    async def get_guild(self, request: web.Request) -> web.Response:
        return json_response(self._guild(request).payload())

    async def get_guild_channels(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        return json_response([c.payload() for c in guild.channels.values()])

    async def get_guild_roles(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        return json_response([r.payload() for r in guild.roles.values()])

    async def get_guild_member(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        member = guild.members.get(int(request.match_info['user_id']))
        if member is None:
            raise unknown('Member', 10007)
        return json_response(member.payload())

    async def get_guild_members(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        if not self.world.application.privileged_intents & Intents.GUILD_MEMBERS:
            raise DiscordHTTPError(403, 50001, 'Missing Access')
        limit = min(int(request.query.get('limit', 1)), 1000)
        after = int(request.query.get('after', 0))
        members = sorted((m for m in guild.members.values() if m.id > after), key=lambda m: m.id)[:limit]
        return json_response([m.payload() for m in members])

    # -- messages ---------------------------------------------------------------------------------------------

    def _message_fields(
        self,
        body: dict[str, Any],
        files: list[UploadedFile],
        channel: FakeChannel,
        *,
        existing: FakeMessage | None,
        ephemeral: bool = False,
    ) -> dict[str, Any]:
        """Validate a create/edit body like Discord does and turn it into FakeMessage field values."""
        fields: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        if 'content' in body:
            content = body['content'] or ''
            if not isinstance(content, str):
                content = str(content)
            if len(content) > 2000:
                errors['content'] = field_error('BASE_TYPE_MAX_LENGTH', 'Must be 2000 or fewer in length.')
            fields['content'] = content
        if 'embeds' in body:
            embeds = body['embeds'] or []
            if len(embeds) > 10:
                errors['embeds'] = field_error('BASE_TYPE_MAX_LENGTH', 'Must be 10 or fewer in length.')
            fields['embeds'] = [dict(e, type=e.get('type', 'rich')) for e in embeds]
        flags = int(body.get('flags') or 0)
        if 'components' in body:
            components = body['components'] or []
            errors.update(validate_components(components, flags | (existing.flags if existing else 0)))
            fields['components'] = components
        if 'poll' in body and body['poll'] is not None:
            fields['poll'] = body['poll']
        if body.get('sticker_ids'):
            fields['sticker_ids'] = [int(s) for s in body['sticker_ids']]
        if 'flags' in body and body['flags'] is not None:
            fields['flags'] = flags
        guild = self.world.guild_of(channel)
        limit = guild.filesize_limit if guild else 10 * 1024 * 1024
        by_field = {f.field: f for f in files}
        used: set[str] = set()
        attachments = []
        if 'attachments' in body or files:
            kept = {a.id: a for a in existing.attachments} if existing else {}
            for position, entry in enumerate(body.get('attachments') or []):
                ident = int(entry['id'])
                upload = by_field.get(f'files[{ident}]')
                if upload is not None and ident < 10_000:
                    used.add(upload.field)
                    attachments.append((upload, entry))
                elif ident in kept:
                    attachments.append((kept[ident], entry))
                else:
                    errors.setdefault('attachments', {})[str(position)] = {
                        'id': field_error('ATTACHMENT_NOT_FOUND', f'Unknown attachment or missing files[{ident}] part')
                    }
            for upload in files:
                if upload.field not in used:
                    attachments.append((upload, {}))
            if existing is not None and 'attachments' not in body:
                attachments = [(a, {}) for a in existing.attachments] + attachments
            uploads = [a for a, _ in attachments if isinstance(a, UploadedFile)]
            if len(attachments) > 10:
                errors['files'] = field_error('BASE_TYPE_MAX_LENGTH', 'Must be 10 or fewer in length.')
            if any(len(u.data) > limit for u in uploads):
                raise DiscordHTTPError(413, 40005, 'Request entity too large')
            if uploads and guild is not None:
                self._require(channel, Permissions.ATTACH_FILES)
            result = []
            for item, entry in attachments:
                if isinstance(item, UploadedFile):
                    filename = entry.get('filename') or item.filename
                    attachment = self.world.new_attachment(
                        channel.id,
                        filename,
                        item.data,
                        item.content_type,
                        description=entry.get('description'),
                        ephemeral=ephemeral,
                    )
                    self.fake._attachments[attachment.id] = attachment
                    result.append(attachment)
                else:
                    result.append(item)
            fields['attachments'] = result
        self._resolve_attachment_urls(fields, existing)
        if errors:
            raise form_error(errors)
        return fields

    @staticmethod
    def _resolve_attachment_urls(fields: dict[str, Any], existing: FakeMessage | None) -> None:
        """Embeds may point at files of the same message as `attachment://name`; Discord swaps in the CDN url."""
        attachments = fields.get('attachments', existing.attachments if existing else [])
        by_name = {a.filename: a for a in attachments}
        for embed in fields.get('embeds') or []:
            for key in ('image', 'thumbnail'):
                media = embed.get(key)
                url = (media or {}).get('url', '')
                if url.startswith('attachment://') and url[len('attachment://') :] in by_name:
                    attachment = by_name[url[len('attachment://') :]]
                    media.update(url=attachment.url, proxy_url=attachment.url.replace('/attachments/', '/media/', 1))
                    size = image_size(attachment.data)
                    if size:
                        media.update(width=size[0], height=size[1])
                    media['content_type'] = attachment.content_type

    @staticmethod
    def _check_not_empty(message: FakeMessage) -> None:
        if not (message.content or message.embeds or message.attachments or message.components or message.poll):
            if not message.sticker_ids and not message.flags & MessageFlags.LOADING:
                raise DiscordHTTPError(400, 50006, 'Cannot send an empty message')

    async def create_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        body = request[BODY] or {}
        if channel.guild_id is not None:
            self._require(channel, Permissions.SEND_MESSAGES)
        nonce = body.get('nonce')
        if nonce is not None and len(str(nonce)) > 25:
            raise form_error({'nonce': field_error('BASE_TYPE_MAX_LENGTH', 'Must be 25 or fewer in length.')})
        if nonce is not None and body.get('enforce_nonce'):
            earlier = self._recent_message_with_nonce(channel, str(nonce))
            if earlier is not None and earlier.deleted:  # Discord does not post a deleted one again either
                raise unknown('Message', 10008)
            if earlier is not None:
                return json_response(self._rest_message(earlier))  # no new message, no MESSAGE_CREATE
        fields = self._message_fields(body, request[FILES], channel, existing=None)
        fields['flags'] = fields.get('flags', 0) & (
            MessageFlags.SUPPRESS_EMBEDS | MessageFlags.SUPPRESS_NOTIFICATIONS | COMPONENTS_V2_FLAG
        )
        message = FakeMessage(
            id=self.world.snowflake(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=self.world.bot_user,
            nonce=nonce,
            tts=bool(body.get('tts')),
            **fields,
        )
        reference = body.get('message_reference')
        if reference:
            ref = self.world.messages.get(int(reference.get('message_id') or 0))
            if ref is None or ref.deleted:
                if reference.get('fail_if_not_exists', True):
                    raise form_error(
                        {'message_reference': field_error('MESSAGE_REFERENCE_UNKNOWN_MESSAGE', 'Unknown message')}
                    )
            else:
                message.type = MessageType.REPLY if reference.get('type', 0) == 0 else MessageType.DEFAULT
                message.reference = {
                    'type': reference.get('type', 0),
                    'channel_id': str(ref.channel_id),
                    'message_id': str(ref.id),
                }
                if ref.guild_id:
                    message.reference['guild_id'] = str(ref.guild_id)
        self._check_not_empty(message)
        self.world.parse_mentions(message, body.get('allowed_mentions'))
        await self.fake._publish_message(message)
        return json_response(self._rest_message(message))

    def _recent_message_with_nonce(self, channel: FakeChannel, nonce: str) -> FakeMessage | None:
        """The bot's message with this nonce in this channel from the last `fake.nonce_window_seconds`, deleted or not.

        Discord's create message with `enforce_nonce`: the nonce "will be checked for uniqueness in the past
        few minutes. If another message was created by the same author with the same nonce, that message will
        be returned and no new message will be created"; one created and then deleted is not created again
        (the answer is 404 Unknown Message). Discord says "by the same author"; the fake also asks for the same
        channel, which is all a retried post needs.
        """
        since_ms = (time.time() - self.fake.nonce_window_seconds) * 1000 - DISCORD_EPOCH_MS
        for message_id in reversed(self.world.channel_messages.get(channel.id, [])):
            message = self.world.messages[message_id]
            if (message.id >> 22) < since_ms:
                return None  # older ones are older still
            if str(message.nonce) == nonce and message.author.id == self.world.bot_user.id and not message.ephemeral:
                return message
        return None

    async def get_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self._require(channel, Permissions.READ_MESSAGE_HISTORY)
        return json_response(self._rest_message(self._message(request, channel)))

    async def get_messages(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self._require(channel, Permissions.READ_MESSAGE_HISTORY)
        limit = max(1, min(int(request.query.get('limit', 50)), 100))
        messages = self.world.visible_messages(channel.id)
        if 'before' in request.query:
            messages = [m for m in messages if m.id < int(request.query['before'])]
            messages = messages[-limit:]
        elif 'after' in request.query:
            messages = [m for m in messages if m.id > int(request.query['after'])][:limit]
        elif 'around' in request.query:
            around = int(request.query['around'])
            older = [m for m in messages if m.id <= around][-(limit // 2 + limit % 2) :]
            newer = [m for m in messages if m.id > around][: limit // 2]
            messages = older + newer
        else:
            messages = messages[-limit:]
        return json_response([self._rest_message(m) for m in reversed(messages)])

    async def edit_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._message(request, channel)
        if message.author.id != self.world.bot_user.id:
            body = request[BODY] or {}
            if set(body) - {'flags'}:
                raise DiscordHTTPError(403, 50005, 'Cannot edit a message authored by another user')
        await self._apply_edit(message, channel, request[BODY] or {}, request[FILES])
        return json_response(self._rest_message(message))

    async def _apply_edit(
        self, message: FakeMessage, channel: FakeChannel, body: dict[str, Any], files: list[UploadedFile]
    ) -> None:
        fields = self._message_fields(body, files, channel, existing=message, ephemeral=message.ephemeral)
        before = message.snapshot()
        if 'flags' in fields:
            keep = message.flags & ~(MessageFlags.SUPPRESS_EMBEDS)
            fields['flags'] = keep | (fields['flags'] & MessageFlags.SUPPRESS_EMBEDS)
        previous = {k: getattr(message, k) for k in fields}
        for key, value in fields.items():
            setattr(message, key, value)
        if message.flags & MessageFlags.LOADING and fields.keys() - {'flags'}:
            message.flags &= ~MessageFlags.LOADING
        try:
            self._check_not_empty(message)
        except DiscordHTTPError:
            for key, value in previous.items():
                setattr(message, key, value)
            raise
        if 'content' in fields:
            self.world.parse_mentions(message, body.get('allowed_mentions'))
        message.history.append(before)
        message.edited_timestamp = now_iso()
        await self.fake._publish_edit(message)

    async def delete_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._message(request, channel)
        if message.author.id != self.world.bot_user.id:
            self._require(channel, Permissions.MANAGE_MESSAGES)
        await self.fake._publish_delete(message)
        return no_content()

    async def bulk_delete(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self._require(channel, Permissions.MANAGE_MESSAGES)
        ids = [int(i) for i in (request[BODY] or {}).get('messages', [])]
        if not 2 <= len(ids) <= 100:
            raise form_error({'messages': field_error('BASE_TYPE_BAD_LENGTH', 'Must be between 2 and 100 in length.')})
        for message_id in ids:
            message = self.world.messages.get(message_id)
            if message is not None and not message.deleted and message.channel_id == channel.id:
                await self.fake._publish_delete(message)
        return no_content()

    async def get_pins(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        pinned = [m for m in self.world.visible_messages(channel.id) if m.pinned]
        items = [{'pinned_at': m.timestamp, 'message': self._rest_message(m)} for m in reversed(pinned)]
        return json_response({'items': items, 'has_more': False})

    async def pin(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self._require(channel, Permissions.MANAGE_MESSAGES)
        self._message(request, channel).pinned = True
        return no_content()

    async def unpin(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self._require(channel, Permissions.MANAGE_MESSAGES)
        self._message(request, channel).pinned = False
        return no_content()

    # -- reactions --------------------------------------------------------------------------------------------

    def _emoji(self, request: web.Request) -> str:
        key = emoji_key(request.match_info['emoji'])
        custom = re.fullmatch(r'[\w~]+:\d+', key) is not None
        if not custom and (not key or key.isascii()):
            raise DiscordHTTPError(400, 10014, 'Unknown Emoji')
        return key

    async def add_own_reaction(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._message(request, channel)
        key = self._emoji(request)
        self._require(channel, Permissions.READ_MESSAGE_HISTORY)
        reaction = message.reactions.get(key)
        if reaction is None or not reaction.user_ids:
            self._require(channel, Permissions.ADD_REACTIONS)
            if len([r for r in message.reactions.values() if r.user_ids]) >= 20:
                raise DiscordHTTPError(400, 30010, 'Maximum number of reactions reached (20)')
        await self.fake._publish_reaction_add(message, key, self.world.bot_user)
        return no_content()

    async def remove_own_reaction(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._message(request, channel)
        await self.fake._publish_reaction_remove(message, self._emoji(request), self.world.bot_user)
        return no_content()

    async def remove_user_reaction(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._message(request, channel)
        user = self.world.users.get(int(request.match_info['user_id']))
        if user is None:
            raise unknown('User', 10013)
        if user.id != self.world.bot_user.id:
            self._require(channel, Permissions.MANAGE_MESSAGES)
        await self.fake._publish_reaction_remove(message, self._emoji(request), user)
        return no_content()

    async def get_reactions(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._message(request, channel)
        reaction = message.reactions.get(self._emoji(request)) or FakeReaction(emoji={})
        users = [self.world.users[u].payload() for u in reaction.user_ids]
        after = int(request.query.get('after', 0))
        limit = int(request.query.get('limit', 25))
        return json_response([u for u in users if int(u['id']) > after][:limit])

    async def clear_emoji_reactions(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._message(request, channel)
        self._require(channel, Permissions.MANAGE_MESSAGES)
        key = self._emoji(request)
        message.reactions.pop(key, None)
        await self.fake._dispatch_message_event(
            message,
            'MESSAGE_REACTION_REMOVE_EMOJI',
            {'channel_id': str(channel.id), 'message_id': str(message.id), 'emoji': emoji_payload(key)},
            reaction=True,
        )
        return no_content()

    async def clear_reactions(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._message(request, channel)
        self._require(channel, Permissions.MANAGE_MESSAGES)
        message.reactions.clear()
        await self.fake._dispatch_message_event(
            message,
            'MESSAGE_REACTION_REMOVE_ALL',
            {'channel_id': str(channel.id), 'message_id': str(message.id)},
            reaction=True,
        )
        return no_content()

    # -- application commands ---------------------------------------------------------------------------------

    def _command_scope(self, request: web.Request) -> int | None:
        if int(request.match_info['app_id']) != self.world.application.id:
            raise DiscordHTTPError(403, 50001, 'Missing Access')
        guild_id = request.match_info.get('guild_id')
        if guild_id is None:
            return None
        guild = self._guild(request)
        return guild.id

    async def get_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        return json_response(list(self.fake.commands.get(scope, {}).values()))

    async def put_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        body = request[BODY] or []
        if not isinstance(body, list):
            raise form_error(
                {'_errors': [{'code': 'LIST_TYPE_CONVERT', 'message': 'Only iterables may be used in a ListType'}]}
            )
        errors = {}
        for index, command in enumerate(body):
            problems = self.fake._validate_command(command)
            if problems:
                errors[str(index)] = problems
        if errors:
            raise form_error(errors)
        self.fake._replace_commands(scope, body)
        return json_response(list(self.fake.commands.get(scope, {}).values()))

    async def post_command(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        command = request[BODY] or {}
        problems = self.fake._validate_command(command)
        if problems:
            raise form_error(problems)
        existing = list(self.fake.commands.get(scope, {}).values())
        others = [c for c in existing if (c['name'], c.get('type', 1)) != (command['name'], command.get('type', 1))]
        stored = self.fake._replace_commands(scope, [*others, command], keep_existing=True)
        return json_response(stored[command['name'], command.get('type', 1)], 201)

    def _find_command(self, request: web.Request) -> tuple[int | None, dict[str, Any]]:
        scope = self._command_scope(request)
        command = self.fake.commands.get(scope, {}).get(int(request.match_info['command_id']))
        if command is None:
            raise unknown('application command', 10063)
        return scope, command

    async def get_command(self, request: web.Request) -> web.Response:
        return json_response(self._find_command(request)[1])

    async def patch_command(self, request: web.Request) -> web.Response:
        scope, command = self._find_command(request)
        merged = {**command, **(request[BODY] or {})}
        problems = self.fake._validate_command(merged)
        if problems:
            raise form_error(problems)
        command.update(request[BODY] or {})
        command['version'] = str(self.world.snowflake())
        return json_response(command)

    async def delete_command(self, request: web.Request) -> web.Response:
        scope, command = self._find_command(request)
        del self.fake.commands[scope][int(command['id'])]
        return no_content()

    # -- interactions and webhooks ----------------------------------------------------------------------------

    def _interaction(self, interaction_id: int | None, token: str) -> InteractionRecord:
        record = self.fake.interactions_by_token.get(token)
        if record is None or (interaction_id is not None and record.id != interaction_id):
            raise unknown('interaction', 10062)
        return record

    async def interaction_callback(self, request: web.Request) -> web.Response:
        record = self._interaction(int(request.match_info['interaction_id']), request.match_info['token'])
        body = request[BODY] or {}
        callback_type = int(body.get('type', 0))
        if record.callback_type is not None:
            raise DiscordHTTPError(400, 40060, 'Interaction has already been acknowledged.')
        if time.monotonic() - record.created > self.fake.interaction_ack_timeout:
            raise unknown('interaction', 10062)
        allowed = {2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 4: {8}, 5: {4, 5, 6, 7}}[record.type]
        if callback_type not in allowed:
            raise DiscordHTTPError(400, 40043, f'Interaction response type {callback_type} is not valid here')
        data = body.get('data') or {}
        channel = self.world.channels[record.channel_id]
        resource: dict[str, Any] = {'type': callback_type}
        response_message: FakeMessage | None = None
        if callback_type in (4, 5):
            ephemeral = bool(int(data.get('flags') or 0) & MessageFlags.EPHEMERAL)
            fields = (
                {}
                if callback_type == 5
                else self._message_fields(data, request[FILES], channel, existing=None, ephemeral=ephemeral)
            )
            flags = MessageFlags.EPHEMERAL if ephemeral else 0
            if callback_type == 5:
                flags |= MessageFlags.LOADING
            else:
                flags |= int(fields.pop('flags', 0)) & (MessageFlags.SUPPRESS_EMBEDS | COMPONENTS_V2_FLAG)
            fields.pop('flags', None)
            response_message = self.fake._interaction_message(record, fields, flags=flags, initial=True)
            if callback_type == 4:
                self._check_not_empty(response_message)
            self.world.parse_mentions(response_message, data.get('allowed_mentions'))
            record.original_message_id = response_message.id
            await self.fake._publish_message(response_message)
            resource['message'] = self.world.message_payload(response_message)
        elif callback_type in (6, 7):
            if record.message_id is None:
                raise DiscordHTTPError(400, 40043, 'This interaction has no message to update')
            record.original_message_id = record.message_id
            message = self.world.messages[record.message_id]
            if callback_type == 7:
                await self._apply_edit(message, channel, data, request[FILES])
                resource['message'] = self.world.message_payload(message)
            response_message = message
        elif callback_type == 9:
            record.modal = data
        elif callback_type == 8:
            record.autocomplete_choices = data.get('choices', [])
        record.callback_type = callback_type
        record.callback_data = data
        self.fake._interaction_answered(record)
        interaction_info: dict[str, Any] = {'id': str(record.id), 'type': record.type}
        if response_message is not None and callback_type != 6:
            interaction_info.update(
                response_message_id=str(response_message.id),
                response_message_loading=callback_type == 5,
                response_message_ephemeral=response_message.ephemeral,
            )
        answer: dict[str, Any] = {'interaction': interaction_info}
        if callback_type != 6:
            answer['resource'] = resource
        if request.query.get('with_response') in ('1', 'true', 'True'):
            return json_response(answer)
        return no_content()

    def _webhook(self, request: web.Request) -> InteractionRecord:
        if int(request.match_info['app_id']) != self.world.application.id:
            raise unknown('Webhook', 10015)
        record = self._interaction(None, request.match_info['token'])
        if time.monotonic() - record.created > self.fake.interaction_token_lifetime or record.expired:
            raise DiscordHTTPError(401, 50027, 'Invalid Webhook Token')
        if record.callback_type is None:
            raise unknown('Webhook', 10015)
        return record

    def _webhook_message(self, request: web.Request, record: InteractionRecord) -> FakeMessage:
        raw = request.match_info['message_id']
        message_id = record.original_message_id if raw == '@original' else int(raw) if raw.isdigit() else None
        message = self.world.messages.get(message_id) if message_id else None
        allowed = {record.original_message_id, *record.followup_ids}
        if message is None or message.deleted or message.id not in allowed:
            raise unknown('Message', 10008)
        return message

    async def webhook_execute(self, request: web.Request) -> web.Response:
        record = self._webhook(request)
        body = request[BODY] or {}
        channel = self.world.channels[record.channel_id]
        ephemeral = bool(int(body.get('flags') or 0) & MessageFlags.EPHEMERAL)
        fields = self._message_fields(body, request[FILES], channel, existing=None, ephemeral=ephemeral)
        flags = int(fields.pop('flags', 0))
        flags &= (
            MessageFlags.EPHEMERAL | MessageFlags.SUPPRESS_EMBEDS | COMPONENTS_V2_FLAG | MessageFlags.SUPPRESS_NOTIFICATIONS
        )
        message = self.fake._interaction_message(record, fields, flags=flags, initial=False)
        self._check_not_empty(message)
        self.world.parse_mentions(message, body.get('allowed_mentions'))
        record.followup_ids.append(message.id)
        await self.fake._publish_message(message)
        if request.query.get('wait') in ('1', 'true', 'True'):
            return json_response(self.world.message_payload(message))
        return no_content()

    async def webhook_get_message(self, request: web.Request) -> web.Response:
        record = self._webhook(request)
        return json_response(self.world.message_payload(self._webhook_message(request, record)))

    async def webhook_edit_message(self, request: web.Request) -> web.Response:
        record = self._webhook(request)
        message = self._webhook_message(request, record)
        channel = self.world.channels[message.channel_id]
        await self._apply_edit(message, channel, request[BODY] or {}, request[FILES])
        return json_response(self.world.message_payload(message))

    async def webhook_delete_message(self, request: web.Request) -> web.Response:
        record = self._webhook(request)
        message = self._webhook_message(request, record)
        await self.fake._publish_delete(message)
        return no_content()
