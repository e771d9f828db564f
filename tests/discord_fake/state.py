"""The fake Discord's world: users, guilds, roles, channels, members, messages and how they look on the wire.

Everything here is plain data plus the serialisers that turn it into Discord API v10 payloads. The REST
routes and the gateway both read and write this one world, so a message the bot posts over REST is the
same object a test later inspects and a button click later points at.
"""

from __future__ import annotations

import itertools
import mimetypes
import re
import struct
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

DISCORD_EPOCH_MS = 1420070400000


class Permissions:
    """Permission bits the fake enforces or hands out (the subset a message/interaction bot touches)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CONNECT = 1 << 20
    SPEAK = 1 << 21
    CHANGE_NICKNAME = 1 << 26
    MANAGE_ROLES = 1 << 28
    USE_APPLICATION_COMMANDS = 1 << 31
    SEND_MESSAGES_IN_THREADS = 1 << 38
    ALL = (1 << 51) - 1

    #: What a fresh server gives @everyone (close to Discord's default for a new guild).
    EVERYONE_DEFAULT = (
        CREATE_INSTANT_INVITE
        | ADD_REACTIONS
        | VIEW_CHANNEL
        | SEND_MESSAGES
        | EMBED_LINKS
        | ATTACH_FILES
        | READ_MESSAGE_HISTORY
        | MENTION_EVERYONE
        | USE_EXTERNAL_EMOJIS
        | CONNECT
        | SPEAK
        | CHANGE_NICKNAME
        | USE_APPLICATION_COMMANDS
        | SEND_MESSAGES_IN_THREADS
    )
    #: What the bot's managed role gets on invite (a typical permission integer in an invite link).
    BOT_DEFAULT = EVERYONE_DEFAULT | MANAGE_MESSAGES


class Intents:
    """Gateway intent bits (https://discord.com/developers/docs/events/gateway#gateway-intents)."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    GUILD_MESSAGE_TYPING = 1 << 11
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    DIRECT_MESSAGE_TYPING = 1 << 14
    MESSAGE_CONTENT = 1 << 15
    GUILD_PRESENCES = 1 << 8
    PRIVILEGED = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT


class ChannelType:
    GUILD_TEXT = 0
    DM = 1
    GUILD_VOICE = 2
    GUILD_CATEGORY = 4


class MessageFlags:
    SUPPRESS_EMBEDS = 1 << 2
    EPHEMERAL = 1 << 6
    LOADING = 1 << 7
    SUPPRESS_NOTIFICATIONS = 1 << 12


class MessageType:
    DEFAULT = 0
    REPLY = 19
    CHAT_INPUT_COMMAND = 20
    CONTEXT_MENU_COMMAND = 23


def now_iso() -> str:
    """An ISO-8601 UTC timestamp with microseconds, as Discord writes them."""
    return datetime.now(timezone.utc).isoformat()


class SnowflakeFactory:
    """Realistic, strictly increasing snowflakes: discord.py derives `created_at` from them and sorts by them."""

    def __init__(self, worker: int = 1, process: int = 0) -> None:
        self._last = 0
        self._low = ((worker & 0x1F) << 17) | ((process & 0x1F) << 12)
        self._counter = itertools.count()

    def __call__(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        value = (ms << 22) | self._low | (next(self._counter) & 0xFFF)
        if value <= self._last:
            value = self._last + 1
        self._last = value
        return value


def emoji_key(emoji: str | dict[str, Any]) -> str:
    """Normalise an emoji (unicode, 'name:id', '<:name:id>' or an emoji dict) into the store's key."""
    if isinstance(emoji, dict):
        return f'{emoji["name"]}:{emoji["id"]}' if emoji.get('id') else str(emoji['name'])
    match = re.fullmatch(r'<?a?:?([\w~]+):(\d+)>?', emoji)
    if match:
        return f'{match.group(1)}:{match.group(2)}'
    return emoji


def emoji_payload(key: str) -> dict[str, Any]:
    """The partial emoji object for a store key."""
    if re.fullmatch(r'[\w~]+:\d+', key):
        name, emoji_id = key.split(':')
        return {'id': emoji_id, 'name': name, 'animated': False}
    return {'id': None, 'name': key}


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF or JPEG, which Discord reports for image attachments."""
    if data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) >= 24:
        return struct.unpack('>II', data[16:24])
    if data[:6] in (b'GIF87a', b'GIF89a') and len(data) >= 10:
        return struct.unpack('<HH', data[6:10])
    if data[:2] == b'\xff\xd8':
        pos = 2
        while pos + 9 < len(data):
            if data[pos] != 0xFF:
                return None
            marker, length = data[pos + 1], struct.unpack('>H', data[pos + 2 : pos + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack('>HH', data[pos + 5 : pos + 9])
                return width, height
            pos += 2 + length
    return None


def guess_content_type(filename: str, declared: str | None = None) -> str | None:
    """Discord sniffs the type from the name; discord.py always declares application/octet-stream."""
    guessed, _ = mimetypes.guess_type(filename)
    if guessed:
        return guessed
    if declared and declared != 'application/octet-stream':
        return declared
    return None


@dataclass
class FakeUser:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    avatar: str | None = None

    @property
    def mention(self) -> str:
        return f'<@{self.id}>'

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            'id': str(self.id),
            'username': self.username,
            'discriminator': '0',
            'global_name': self.global_name,
            'avatar': self.avatar,
            'public_flags': 0,
            'flags': 0,
            'banner': None,
            'accent_color': None,
            'avatar_decoration_data': None,
            'primary_guild': None,
            'collectibles': None,
        }
        if self.bot:
            data['bot'] = True
        return data


@dataclass
class FakeRole:
    id: int
    name: str
    permissions: int
    position: int = 0
    color: int = 0
    hoist: bool = False
    managed: bool = False
    mentionable: bool = False
    bot_id: int | None = None

    @property
    def mention(self) -> str:
        return f'<@&{self.id}>'

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            'id': str(self.id),
            'name': self.name,
            'description': None,
            'color': self.color,
            'colors': {'primary_color': self.color, 'secondary_color': None, 'tertiary_color': None},
            'hoist': self.hoist,
            'icon': None,
            'unicode_emoji': None,
            'position': self.position,
            'permissions': str(self.permissions),
            'managed': self.managed,
            'mentionable': self.mentionable,
            'flags': 0,
        }
        if self.bot_id is not None:
            data['tags'] = {'bot_id': str(self.bot_id)}
        return data


@dataclass
class FakeMember:
    user: FakeUser
    role_ids: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=now_iso)

    @property
    def id(self) -> int:
        return self.user.id

    def payload(self, *, with_user: bool = True, permissions: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            'nick': self.nick,
            'avatar': None,
            'banner': None,
            'roles': [str(r) for r in self.role_ids],
            'joined_at': self.joined_at,
            'premium_since': None,
            'deaf': False,
            'mute': False,
            'flags': 0,
            'pending': False,
            'communication_disabled_until': None,
        }
        if with_user:
            data['user'] = self.user.payload()
        if permissions is not None:
            data['permissions'] = str(permissions)
        return data


@dataclass
class Overwrite:
    id: int
    type: int  # 0 role, 1 member
    allow: int = 0
    deny: int = 0

    def payload(self) -> dict[str, Any]:
        return {'id': str(self.id), 'type': self.type, 'allow': str(self.allow), 'deny': str(self.deny)}


@dataclass
class FakeChannel:
    id: int
    name: str | None
    type: int = ChannelType.GUILD_TEXT
    guild_id: int | None = None
    position: int = 0
    topic: str | None = None
    nsfw: bool = False
    parent_id: int | None = None
    overwrites: list[Overwrite] = field(default_factory=list)
    recipients: list[FakeUser] = field(default_factory=list)
    rate_limit_per_user: int = 0
    last_message_id: int | None = None

    @property
    def mention(self) -> str:
        return f'<#{self.id}>'

    def payload(self, *, include_guild_id: bool = True) -> dict[str, Any]:
        if self.type == ChannelType.DM:
            return {
                'id': str(self.id),
                'type': self.type,
                'last_message_id': str(self.last_message_id) if self.last_message_id else None,
                'recipients': [u.payload() for u in self.recipients],
                'flags': 0,
            }
        data: dict[str, Any] = {
            'id': str(self.id),
            'type': self.type,
            'name': self.name,
            'position': self.position,
            'permission_overwrites': [o.payload() for o in self.overwrites],
            'parent_id': str(self.parent_id) if self.parent_id else None,
            'flags': 0,
        }
        if self.type == ChannelType.GUILD_TEXT:
            data.update(
                topic=self.topic,
                nsfw=self.nsfw,
                rate_limit_per_user=self.rate_limit_per_user,
                last_message_id=str(self.last_message_id) if self.last_message_id else None,
                last_pin_timestamp=None,
                default_thread_rate_limit_per_user=0,
            )
        elif self.type == ChannelType.GUILD_VOICE:
            data.update(bitrate=64000, user_limit=0, rtc_region=None, nsfw=False, rate_limit_per_user=0)
        if include_guild_id and self.guild_id is not None:
            data['guild_id'] = str(self.guild_id)
        return data


@dataclass
class FakeGuild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, FakeRole] = field(default_factory=dict)
    channels: dict[int, FakeChannel] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    #: Largest attachment (bytes) a message may carry; Discord's default for bots is 10 MiB.
    filesize_limit: int = 10 * 1024 * 1024
    premium_tier: int = 0
    preferred_locale: str = 'en-US'
    system_channel_id: int | None = None

    @property
    def everyone(self) -> FakeRole:
        return self.roles[self.id]

    def channel_named(self, name: str) -> FakeChannel:
        for channel in self.channels.values():
            if channel.name == name:
                return channel
        raise KeyError(name)

    def role_named(self, name: str) -> FakeRole:
        for role in self.roles.values():
            if role.name == name:
                return role
        raise KeyError(name)

    def base_permissions(self, user_id: int) -> int:
        """Guild-level permissions: @everyone | member roles, with owner and Administrator meaning everything."""
        if user_id == self.owner_id:
            return Permissions.ALL
        member = self.members.get(user_id)
        if member is None:
            return 0
        perms = self.everyone.permissions
        for role_id in member.role_ids:
            role = self.roles.get(role_id)
            if role is not None:
                perms |= role.permissions
        if perms & Permissions.ADMINISTRATOR:
            return Permissions.ALL
        return perms

    def channel_permissions(self, channel: FakeChannel, user_id: int) -> int:
        """Permissions in a channel, applying overwrites in Discord's order (@everyone, roles, member)."""
        perms = self.base_permissions(user_id)
        if perms == Permissions.ALL:
            return perms
        member = self.members.get(user_id)
        role_ids = set(member.role_ids) if member else set()
        overwrites = {(o.type, o.id): o for o in channel.overwrites}
        everyone = overwrites.get((0, self.id))
        if everyone:
            perms = (perms & ~everyone.deny) | everyone.allow
        allow = deny = 0
        for (kind, target), overwrite in overwrites.items():
            if kind == 0 and target in role_ids:
                allow |= overwrite.allow
                deny |= overwrite.deny
        perms = (perms & ~deny) | allow
        own = overwrites.get((1, user_id))
        if own:
            perms = (perms & ~own.deny) | own.allow
        if not perms & Permissions.VIEW_CHANNEL:
            return 0
        return perms

    def payload(self) -> dict[str, Any]:
        """The guild object as REST `GET /guilds/{id}` returns it."""
        return {
            'id': str(self.id),
            'name': self.name,
            'icon': None,
            'icon_hash': None,
            'splash': None,
            'discovery_splash': None,
            'owner_id': str(self.owner_id),
            'afk_channel_id': None,
            'afk_timeout': 300,
            'widget_enabled': False,
            'verification_level': 0,
            'default_message_notifications': 0,
            'explicit_content_filter': 0,
            'roles': [r.payload() for r in sorted(self.roles.values(), key=lambda r: r.position)],
            'emojis': [],
            'stickers': [],
            'features': [],
            'mfa_level': 0,
            'application_id': None,
            'system_channel_id': str(self.system_channel_id) if self.system_channel_id else None,
            'system_channel_flags': 0,
            'rules_channel_id': None,
            'max_members': 500000,
            'vanity_url_code': None,
            'description': None,
            'banner': None,
            'premium_tier': self.premium_tier,
            'premium_subscription_count': 0,
            'preferred_locale': self.preferred_locale,
            'public_updates_channel_id': None,
            'safety_alerts_channel_id': None,
            'nsfw_level': 0,
            'premium_progress_bar_enabled': False,
            'approximate_member_count': len(self.members),
            'approximate_presence_count': 0,
        }


@dataclass
class FakeAttachment:
    """An uploaded file; `data` holds the exact bytes, and `url` is served by the fake so bots can download it."""

    id: int
    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None
    url: str = ''
    ephemeral: bool = False
    title: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            'id': str(self.id),
            'filename': self.filename,
            'size': self.size,
            'url': self.url,
            'proxy_url': self.url.replace('/attachments/', '/media/', 1),
        }
        if self.content_type:
            data['content_type'] = self.content_type
        if self.description:
            data['description'] = self.description
        if self.title:
            data['title'] = self.title
        if self.ephemeral:
            data['ephemeral'] = True
        size = image_size(self.data)
        if size:
            data['width'], data['height'] = size
            data['placeholder'] = ''
            data['placeholder_version'] = 1
        return data


@dataclass
class FakeReaction:
    emoji: dict[str, Any]
    user_ids: list[int] = field(default_factory=list)


@dataclass
class FakeMessage:
    """A message as the fake stores it: what was sent, not how one client sees it (see `World.message_payload`)."""

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str = ''
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[FakeAttachment] = field(default_factory=list)
    type: int = MessageType.DEFAULT
    flags: int = 0
    tts: bool = False
    nonce: str | int | None = None
    mention_ids: list[int] = field(default_factory=list)
    mention_role_ids: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    reference: dict[str, Any] | None = None
    reactions: dict[str, FakeReaction] = field(default_factory=dict)
    timestamp: str = field(default_factory=now_iso)
    edited_timestamp: str | None = None
    deleted: bool = False
    pinned: bool = False
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_metadata: dict[str, Any] | None = None
    poll: dict[str, Any] | None = None
    sticker_ids: list[int] = field(default_factory=list)
    #: Every earlier version of the message (content, embeds, components, attachment ids), oldest first.
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & MessageFlags.EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & MessageFlags.LOADING)

    @property
    def jump_url(self) -> str:
        return f'https://discord.com/channels/{self.guild_id or "@me"}/{self.channel_id}/{self.id}'

    def iter_components(self) -> list[dict[str, Any]]:
        """Every interactive component, however deeply nested (action rows, sections, containers)."""
        found: list[dict[str, Any]] = []

        def walk(items: list[dict[str, Any]]) -> None:
            for item in items:
                if 'custom_id' in item or item.get('type') == 2:
                    found.append(item)
                for key in ('components',):
                    walk(item.get(key) or [])
                if isinstance(item.get('accessory'), dict):
                    walk([item['accessory']])
                if isinstance(item.get('component'), dict):
                    walk([item['component']])

        walk(self.components)
        return found

    def custom_ids(self) -> list[str]:
        return [c['custom_id'] for c in self.iter_components() if 'custom_id' in c]

    def component(self, custom_id: str) -> dict[str, Any] | None:
        for item in self.iter_components():
            if item.get('custom_id') == custom_id:
                return item
        return None

    def button(self, *, label: str | None = None, emoji: str | None = None) -> dict[str, Any]:
        """Find a button by its label or emoji name, which is how a person finds it."""
        for item in self.iter_components():
            if item.get('type') != 2:
                continue
            if label is not None and item.get('label') == label:
                return item
            if emoji is not None and (item.get('emoji') or {}).get('name') == emoji:
                return item
        raise KeyError(label or emoji)

    def reaction_users(self, emoji: str) -> list[int]:
        reaction = self.reactions.get(emoji_key(emoji))
        return list(reaction.user_ids) if reaction else []

    def snapshot(self) -> dict[str, Any]:
        return {
            'content': self.content,
            'embeds': self.embeds,
            'components': self.components,
            'attachment_ids': [a.id for a in self.attachments],
            'flags': self.flags,
            'edited_timestamp': self.edited_timestamp,
        }


@dataclass
class FakeApplication:
    id: int
    name: str
    owner: FakeUser
    #: Privileged intents switched on in the (fake) developer portal; identifying with others closes with 4014.
    privileged_intents: int = Intents.PRIVILEGED
    flags: int = 0
    verify_key: str = '0' * 64

    def effective_flags(self) -> int:
        """Application flags as Discord reports them: the *_LIMITED bits mirror the portal switches."""
        flags = self.flags
        if self.privileged_intents & Intents.GUILD_PRESENCES:
            flags |= 1 << 13
        if self.privileged_intents & Intents.GUILD_MEMBERS:
            flags |= 1 << 15
        if self.privileged_intents & Intents.MESSAGE_CONTENT:
            flags |= 1 << 19
        return flags

    def payload(self) -> dict[str, Any]:
        return {
            'id': str(self.id),
            'name': self.name,
            'icon': None,
            'description': 'A fake application served by tests/discord_fake.',
            'summary': '',
            'type': None,
            'hook': True,
            'bot_public': True,
            'bot_require_code_grant': False,
            'verify_key': self.verify_key,
            'owner': self.owner.payload(),
            'team': None,
            'flags': self.effective_flags(),
            'interactions_endpoint_url': None,
            'role_connections_verification_url': None,
            'redirect_uris': [],
            'tags': [],
            'install_params': None,
            'custom_install_url': None,
            'approximate_guild_count': 1,
            'integration_types_config': {'0': {}},
            'rpc_origins': [],
            'terms_of_service_url': None,
            'privacy_policy_url': None,
            'cover_image': None,
        }


MENTION_USER_RE = re.compile(r'<@!?(\d+)>')
MENTION_ROLE_RE = re.compile(r'<@&(\d+)>')


class World:
    """All state of the fake Discord, and the payload builders that both REST and the gateway use."""

    def __init__(self, *, http_base: str = '') -> None:
        self.snowflake = SnowflakeFactory()
        self.http_base = http_base
        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.messages: dict[int, FakeMessage] = {}
        self.channel_messages: dict[int, list[int]] = {}
        self.bot_user = self.add_user('edalle', bot=True, global_name=None)
        self.owner_user = self.add_user('owner', global_name='Owner')
        self.application = FakeApplication(id=self.bot_user.id, name='edalle', owner=self.owner_user)
        self.token = 'fake-bot-token.' + str(self.bot_user.id)

    # -- building ---------------------------------------------------------------------------------------------

    def add_user(self, username: str, *, bot: bool = False, global_name: str | None = None) -> FakeUser:
        user = FakeUser(id=self.snowflake(), username=username, global_name=global_name or username.title(), bot=bot)
        if bot:
            user.global_name = None
        self.users[user.id] = user
        return user

    def add_guild(
        self,
        name: str,
        *,
        owner: FakeUser | None = None,
        everyone_permissions: int = Permissions.EVERYONE_DEFAULT,
        bot_permissions: int = Permissions.BOT_DEFAULT,
        filesize_limit: int = 10 * 1024 * 1024,
    ) -> FakeGuild:
        """A guild with @everyone, the bot (with its managed role) and its owner as members, and no channels."""
        owner = owner or self.owner_user
        guild = FakeGuild(id=self.snowflake(), name=name, owner_id=owner.id, filesize_limit=filesize_limit)
        guild.roles[guild.id] = FakeRole(id=guild.id, name='@everyone', permissions=everyone_permissions, position=0)
        bot_role = FakeRole(
            id=self.snowflake(),
            name=self.bot_user.username,
            permissions=bot_permissions,
            position=1,
            managed=True,
            bot_id=self.bot_user.id,
        )
        guild.roles[bot_role.id] = bot_role
        self.guilds[guild.id] = guild
        self.add_member(guild, owner)
        self.add_member(guild, self.bot_user, roles=[bot_role])
        return guild

    def add_role(self, guild: FakeGuild, name: str, permissions: int = 0, **kwargs: Any) -> FakeRole:
        position = max(r.position for r in guild.roles.values()) + 1
        role = FakeRole(id=self.snowflake(), name=name, permissions=permissions, position=position, **kwargs)
        guild.roles[role.id] = role
        return role

    def add_member(self, guild: FakeGuild, user: FakeUser, *, roles: list[FakeRole] | None = None) -> FakeMember:
        member = FakeMember(user=user, role_ids=[r.id for r in roles or []])
        guild.members[user.id] = member
        return member

    def add_channel(
        self, guild: FakeGuild, name: str, *, type: int = ChannelType.GUILD_TEXT, parent: FakeChannel | None = None
    ) -> FakeChannel:
        channel = FakeChannel(
            id=self.snowflake(),
            name=name,
            type=type,
            guild_id=guild.id,
            position=len(guild.channels),
            parent_id=parent.id if parent else None,
        )
        guild.channels[channel.id] = channel
        self.channels[channel.id] = channel
        self.channel_messages[channel.id] = []
        return channel

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The bot's DM channel with `user`, created on first use like `POST /users/@me/channels`."""
        for channel in self.channels.values():
            if channel.type == ChannelType.DM and channel.recipients and channel.recipients[0].id == user.id:
                return channel
        channel = FakeChannel(id=self.snowflake(), name=None, type=ChannelType.DM, recipients=[user])
        self.channels[channel.id] = channel
        self.channel_messages[channel.id] = []
        return channel

    # -- lookups ----------------------------------------------------------------------------------------------

    def guild_of(self, channel: FakeChannel) -> FakeGuild | None:
        return self.guilds.get(channel.guild_id) if channel.guild_id else None

    def user_named(self, name: str) -> FakeUser:
        for user in self.users.values():
            if user.username == name:
                return user
        raise KeyError(name)

    def visible_messages(self, channel_id: int) -> list[FakeMessage]:
        """Non-deleted, non-ephemeral messages of a channel, oldest first."""
        ids = self.channel_messages.get(channel_id, [])
        return [m for m in (self.messages[i] for i in ids) if not m.deleted and not m.ephemeral]

    def permissions_in(self, channel: FakeChannel, user_id: int) -> int:
        guild = self.guild_of(channel)
        if guild is None:
            return Permissions.EVERYONE_DEFAULT & ~Permissions.MENTION_EVERYONE
        return guild.channel_permissions(channel, user_id)

    # -- messages ---------------------------------------------------------------------------------------------

    def parse_mentions(self, message: FakeMessage, allowed_mentions: dict[str, Any] | None = None) -> None:
        """Fill the mention fields from the content, honouring `allowed_mentions` the way Discord does."""
        user_ids = [int(u) for u in MENTION_USER_RE.findall(message.content) if int(u) in self.users]
        role_ids = [int(r) for r in MENTION_ROLE_RE.findall(message.content)]
        everyone = '@everyone' in message.content or '@here' in message.content
        if allowed_mentions is not None:
            parse = allowed_mentions.get('parse') or []
            if 'users' not in parse:
                allowed_users = {int(u) for u in allowed_mentions.get('users') or []}
                user_ids = [u for u in user_ids if u in allowed_users]
            if 'roles' not in parse:
                allowed_roles = {int(r) for r in allowed_mentions.get('roles') or []}
                role_ids = [r for r in role_ids if r in allowed_roles]
            everyone = everyone and 'everyone' in parse
            if message.reference and allowed_mentions.get('replied_user'):
                ref = self.messages.get(int(message.reference.get('message_id', 0)))
                if ref is not None and ref.author.id not in user_ids:
                    user_ids.append(ref.author.id)
        elif message.reference:
            ref = self.messages.get(int(message.reference.get('message_id', 0)))
            if ref is not None and ref.author.id not in user_ids:
                user_ids.append(ref.author.id)
        message.mention_ids = list(dict.fromkeys(user_ids))
        message.mention_role_ids = list(dict.fromkeys(role_ids))
        message.mention_everyone = everyone

    def store_message(self, message: FakeMessage) -> FakeMessage:
        self.messages[message.id] = message
        self.channel_messages.setdefault(message.channel_id, []).append(message.id)
        channel = self.channels.get(message.channel_id)
        if channel is not None and not message.ephemeral:
            channel.last_message_id = message.id
        return message

    def new_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        *,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> FakeAttachment:
        attachment_id = self.snowflake()
        url = f'{self.http_base}/attachments/{channel_id}/{attachment_id}/{filename}'
        return FakeAttachment(
            id=attachment_id,
            filename=filename,
            data=data,
            content_type=guess_content_type(filename, content_type),
            description=description,
            url=url,
            ephemeral=ephemeral,
        )

    def reactions_payload(self, message: FakeMessage) -> list[dict[str, Any]]:
        out = []
        for reaction in message.reactions.values():
            if not reaction.user_ids:
                continue
            me = self.bot_user.id in reaction.user_ids
            out.append(
                {
                    'emoji': reaction.emoji,
                    'count': len(reaction.user_ids),
                    'count_details': {'burst': 0, 'normal': len(reaction.user_ids)},
                    'me': me,
                    'me_burst': False,
                    'burst_me': False,
                    'burst_colors': [],
                    'burst_count': 0,
                }
            )
        return out

    def message_payload(
        self,
        message: FakeMessage,
        *,
        gateway: bool = False,
        content_intent: bool = True,
        with_referenced: bool = True,
    ) -> dict[str, Any]:
        """A message object; `gateway` adds guild_id/member; `content_intent=False` blanks it as Discord does without
        MESSAGE_CONTENT (unless it is exempt: see `hidden_without_content_intent`)."""
        guild = self.guilds.get(message.guild_id) if message.guild_id else None
        mentions = []
        for user_id in message.mention_ids:
            user = self.users.get(user_id)
            if user is None:
                continue
            entry = user.payload()
            member = guild.members.get(user_id) if guild else None
            if member is not None and gateway:
                entry['member'] = member.payload(with_user=False)
            mentions.append(entry)
        data: dict[str, Any] = {
            'id': str(message.id),
            'type': message.type,
            'content': message.content,
            'channel_id': str(message.channel_id),
            'author': message.author.payload(),
            'attachments': [a.payload() for a in message.attachments],
            'embeds': message.embeds,
            'mentions': mentions,
            'mention_roles': [str(r) for r in message.mention_role_ids],
            'mention_everyone': message.mention_everyone,
            'pinned': message.pinned,
            'tts': message.tts,
            'timestamp': message.timestamp,
            'edited_timestamp': message.edited_timestamp,
            'flags': message.flags,
            'components': message.components,
        }
        reactions = self.reactions_payload(message)
        if reactions:
            data['reactions'] = reactions
        if message.nonce is not None:
            data['nonce'] = message.nonce
        if message.webhook_id is not None:
            data['webhook_id'] = str(message.webhook_id)
        if message.application_id is not None:
            data['application_id'] = str(message.application_id)
        if message.interaction_metadata is not None:
            data['interaction_metadata'] = message.interaction_metadata
        if message.poll is not None:
            data['poll'] = message.poll
        if message.reference is not None:
            data['message_reference'] = message.reference
            if with_referenced and message.type == MessageType.REPLY:
                ref = self.messages.get(int(message.reference['message_id']))
                data['referenced_message'] = (
                    None
                    if ref is None or ref.deleted
                    else self.message_payload(ref, gateway=gateway, content_intent=content_intent, with_referenced=False)
                )
        if gateway and guild is not None:
            data['guild_id'] = str(guild.id)
            member = guild.members.get(message.author.id)
            if member is not None and message.webhook_id is None:
                data['member'] = member.payload(with_user=False)
        if not content_intent and self.hidden_without_content_intent(message):
            data.update(content='', embeds=[], attachments=[], components=[])
            data.pop('poll', None)
        return data

    def hidden_without_content_intent(self, message: FakeMessage) -> bool:
        """Whether Discord blanks this message for a bot without MESSAGE_CONTENT (DMs, own and mentions are exempt)."""
        if message.guild_id is None:
            return False
        if message.author.id == self.bot_user.id:
            return False
        return self.bot_user.id not in message.mention_ids

    def guild_create_payload(self, guild: FakeGuild, *, with_members: bool) -> dict[str, Any]:
        """GUILD_CREATE as Discord sends it on connect; without GUILD_MEMBERS only the bot's member is listed."""
        data = guild.payload()
        members = list(guild.members.values())
        if not with_members:
            members = [m for m in members if m.id == self.bot_user.id]
        bot_member = guild.members.get(self.bot_user.id)
        data.update(
            joined_at=bot_member.joined_at if bot_member else now_iso(),
            large=len(guild.members) > 250,
            unavailable=False,
            member_count=len(guild.members),
            voice_states=[],
            members=[m.payload() for m in members],
            channels=[c.payload(include_guild_id=False) for c in guild.channels.values()],
            threads=[],
            presences=[],
            stage_instances=[],
            guild_scheduled_events=[],
            soundboard_sounds=[],
            embedded_activities=[],
            activity_instances=[],
            lazy=True,
            application_command_counts={},
            version=int(time.time() * 1000),
        )
        return data
