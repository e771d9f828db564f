"""The gateway half of the fake: a websocket speaking Discord's v10 JSON protocol in plain text frames.

It does what a bot depends on: HELLO, heartbeats, IDENTIFY -> READY + GUILD_CREATE, RESUME with replay of
missed events, intents (which events a session gets, and blanked message content without MESSAGE_CONTENT),
close code 4014 for privileged intents the application was not granted, and op 8 member chunk requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from .state import Intents

if TYPE_CHECKING:
    from .server import FakeDiscord

log = logging.getLogger(__name__)

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE_UPDATE, VOICE_STATE_UPDATE = 0, 1, 2, 3, 4
RESUME, RECONNECT, REQUEST_GUILD_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11

#: Events every session gets whatever its intents (READY, RESUMED and interactions are not intent-gated).
UNGATED = {'READY', 'RESUMED', 'INTERACTION_CREATE', 'APPLICATION_COMMAND_PERMISSIONS_UPDATE', 'USER_UPDATE'}


def required_intent(event: str, in_guild: bool) -> int:
    """The intent Discord requires to deliver `event` (0 when none is needed)."""
    if event in UNGATED:
        return 0
    if event.startswith('MESSAGE_REACTION'):
        return Intents.GUILD_MESSAGE_REACTIONS if in_guild else Intents.DIRECT_MESSAGE_REACTIONS
    if event.startswith('MESSAGE_'):
        return Intents.GUILD_MESSAGES if in_guild else Intents.DIRECT_MESSAGES
    if event == 'TYPING_START':
        return Intents.GUILD_MESSAGE_TYPING if in_guild else Intents.DIRECT_MESSAGE_TYPING
    if event in ('GUILD_MEMBER_ADD', 'GUILD_MEMBER_UPDATE', 'GUILD_MEMBER_REMOVE'):
        return Intents.GUILD_MEMBERS
    if event == 'PRESENCE_UPDATE':
        return Intents.GUILD_PRESENCES
    return Intents.GUILDS


@dataclass
class GatewaySession:
    """One identified session; survives its websocket so a RESUME can replay what was missed."""

    session_id: str
    intents: int
    properties: dict[str, Any]
    seq: int = 0
    ws: web.WebSocketResponse | None = None
    buffer: list[dict[str, Any]] = field(default_factory=list)
    invalid: bool = False
    presence: dict[str, Any] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    resumes: int = 0

    def has_intent(self, bit: int) -> bool:
        return bool(self.intents & bit)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Number, buffer and (if connected) send one event; the lock keeps sequence order equal to send order."""
        async with self.lock:
            self.seq += 1
            payload = {'op': DISPATCH, 't': event, 's': self.seq, 'd': data}
            self.buffer.append(payload)
            del self.buffer[:-2000]
            await self._send(payload)

    async def _send(self, payload: dict[str, Any]) -> None:
        ws = self.ws
        if ws is None or ws.closed:
            return
        try:
            await ws.send_str(json.dumps(payload))
        except (ConnectionResetError, RuntimeError, aiohttp.ClientError):
            self.ws = None


class Gateway:
    """The websocket endpoint plus the registry of sessions; `FakeDiscord` fans events out through it."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.world = fake.world
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: list[web.WebSocketResponse] = []
        self.heartbeat_interval_ms = 41250
        self.identifies = 0
        self.resumes = 0
        self.received: list[dict[str, Any]] = []

    @property
    def live_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions.values() if not s.invalid]

    async def broadcast(
        self, event: str, build: Callable[[GatewaySession], dict[str, Any] | None], *, in_guild: bool
    ) -> None:
        """Send `event` to every live session whose intents allow it; `build` may tailor or veto per session."""
        needed = required_intent(event, in_guild)
        for session in self.live_sessions:
            if needed and not session.has_intent(needed):
                continue
            data = build(session)
            if data is not None:
                await session.dispatch(event, data)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        self.connections.append(ws)
        session: GatewaySession | None = None
        closed_by_client = False
        try:
            if request.query.get('v', '10') != '10':
                await ws.close(code=4012, message=b'Invalid API version')
                return ws
            if request.query.get('encoding', 'json') != 'json':
                await ws.close(code=4002, message=b'Decode error')
                return ws
            await ws.send_str(
                json.dumps({'op': HELLO, 'd': {'heartbeat_interval': self.heartbeat_interval_ms, '_trace': []}})
            )
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        await ws.close(code=4002, message=b'Decode error')
                    break
                try:
                    payload = json.loads(msg.data)
                except ValueError:
                    await ws.close(code=4002, message=b'Decode error')
                    break
                self.received.append(payload)
                session = await self._on_payload(ws, session, payload)
            closed_by_client = ws.close_code in (1000, 1001) and not getattr(ws, '_fake_server_close', False)
        finally:
            self.connections.remove(ws)
            if session is not None and session.ws is ws:
                session.ws = None
                if closed_by_client:
                    # A client closing with 1000/1001 ends its session on Discord: it cannot be resumed.
                    session.invalid = True
        return ws

    async def _on_payload(
        self, ws: web.WebSocketResponse, session: GatewaySession | None, payload: dict[str, Any]
    ) -> GatewaySession | None:
        op = payload.get('op')
        data = payload.get('d')
        if op == HEARTBEAT:
            await ws.send_str(json.dumps({'op': HEARTBEAT_ACK}))
        elif op == IDENTIFY:
            if session is not None:
                await ws.close(code=4005, message=b'Already authenticated')
                return session
            return await self._identify(ws, data or {})
        elif op == RESUME:
            return await self._resume(ws, data or {})
        elif session is None:
            await ws.close(code=4003, message=b'Not authenticated')
        elif op == PRESENCE_UPDATE:
            session.presence = data
            self.fake.presence = data
        elif op == REQUEST_GUILD_MEMBERS:
            await self._chunk(session, data or {})
        elif op == VOICE_STATE_UPDATE:
            pass
        else:
            await ws.close(code=4001, message=b'Unknown opcode')
        return session

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> GatewaySession | None:
        if data.get('token') != self.world.token:
            await ws.close(code=4004, message=b'Authentication failed')
            return None
        intents = data.get('intents')
        if not isinstance(intents, int) or intents < 0:
            await ws.close(code=4013, message=b'Invalid intent(s)')
            return None
        if intents & Intents.PRIVILEGED & ~self.world.application.privileged_intents:
            await ws.close(code=4014, message=b'Disallowed intent(s)')
            return None
        session = GatewaySession(session_id=secrets.token_hex(16), intents=intents, properties=data.get('properties', {}))
        session.ws = ws
        self.sessions[session.session_id] = session
        self.identifies += 1
        guilds = [g for g in self.world.guilds.values() if self.world.bot_user.id in g.members]
        user = self.world.bot_user.payload()
        user.update(verified=True, mfa_enabled=False, email=None, flags=0)
        ready: dict[str, Any] = {
            'v': 10,
            'user': user,
            'guilds': [{'id': str(g.id), 'unavailable': True} for g in guilds],
            'session_id': session.session_id,
            'session_type': 'normal',
            'resume_gateway_url': self.fake.resume_gateway_url,
            'application': {'id': str(self.world.application.id), 'flags': self.world.application.effective_flags()},
            'private_channels': [],
            'relationships': [],
            'presences': [],
            'guild_join_requests': [],
            'geo_ordered_rtc_regions': ['local'],
            'user_settings': {},
            'auth': {},
            '_trace': ['["fake-gateway",{"micros":1}]'],
        }
        if 'shard' in data:
            ready['shard'] = data['shard']
        await session.dispatch('READY', ready)
        if session.has_intent(Intents.GUILDS):
            for guild in guilds:
                payload = self.world.guild_create_payload(guild, with_members=session.has_intent(Intents.GUILD_MEMBERS))
                await session.dispatch('GUILD_CREATE', payload)
        self.fake._emit('identify', session)
        return session

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> GatewaySession | None:
        session = self.sessions.get(str(data.get('session_id')))
        if data.get('token') != self.world.token:
            await ws.close(code=4004, message=b'Authentication failed')
            return None
        if session is None or session.invalid:
            await ws.send_str(json.dumps({'op': INVALID_SESSION, 'd': False}))
            return None
        seq = data.get('seq') or 0
        async with session.lock:
            session.ws = ws
            for payload in session.buffer:
                if payload['s'] > seq:
                    await session._send(payload)
        session.resumes += 1
        self.resumes += 1
        await session.dispatch('RESUMED', {'_trace': ['["fake-gateway",{"micros":1}]']})
        self.fake._emit('resume', session)
        return session

    async def _chunk(self, session: GatewaySession, data: dict[str, Any]) -> None:
        guild = self.world.guilds.get(int(data.get('guild_id') or 0))
        if guild is None:
            return
        members = list(guild.members.values())
        if data.get('user_ids'):
            wanted = {int(u) for u in data['user_ids']}
            members = [m for m in members if m.id in wanted]
        elif data.get('query'):
            query = str(data['query']).lower()
            members = [m for m in members if m.user.username.lower().startswith(query)]
        if data.get('limit'):
            members = members[: int(data['limit'])]
        chunk: dict[str, Any] = {
            'guild_id': str(guild.id),
            'members': [m.payload() for m in members],
            'chunk_index': 0,
            'chunk_count': 1,
            'not_found': [],
        }
        if data.get('nonce'):
            chunk['nonce'] = data['nonce']
        if data.get('presences'):
            chunk['presences'] = []
        await session.dispatch('GUILD_MEMBERS_CHUNK', chunk)

    async def disconnect(self, code: int = 4000) -> int:
        """Close every open websocket from the server side (sessions stay resumable); returns how many."""
        sockets = list(self.connections)
        for ws in sockets:
            ws._fake_server_close = True  # type: ignore[attr-defined]
            await ws.close(code=code, message=b'Disconnected by test')
        return len(sockets)

    async def send_op(self, op: int, data: Any = None) -> None:
        """Send a raw opcode (e.g. 7 RECONNECT, 9 INVALID_SESSION) to every connected session."""
        for session in self.live_sessions:
            if op == INVALID_SESSION and not data:
                session.invalid = True
            await session._send({'op': op, 'd': data})

    async def close_all(self) -> None:
        await self.disconnect(code=1001)
