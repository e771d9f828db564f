"""Limits admins tune, their defaults, and how the layers combine.

A limit is resolved in layers, each overriding the one before where it sets a value:

    code defaults (`Limits()`) → bot-wide settings (guild 0) → the guild's settings
    → the user's override everywhere (guild 0) → the user's override in the guild

Settings are stored one key per row (`guild_settings`, `user_overrides`) as JSON, so a new limit needs
no migration, only a `SettingSpec` here. Quotas count the user's jobs across all guilds (the GPU is one
shared resource); the limit that applies is the one of the guild where the job is asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from edalle.errors import InvalidSetting

DAY_SECONDS = 86_400
BOT_WIDE = 0  # the guild id of bot-wide settings, overrides and bans (and of direct messages)


@dataclass(frozen=True, slots=True)
class Limits:
    """Every limit with its default. Counts are per user unless the name says otherwise."""

    daily_imagines: int = 25  # sampling jobs (imagine, …) per UTC day (queued, running or succeeded ones count)
    daily_edits: int = 10  # optimising and upscaling jobs (expand, …) per UTC day
    pending_per_user: int = 3  # jobs queued or running at once
    queue_cap: int = 200  # all users' queued + running jobs: past this the queue refuses new work
    candidates_per_imagine: int = 9  # the most candidates one imagine may ask for
    expand_steps: int = 200  # the most optimiser steps one expand may ask for (E-DALL-E's 200)
    cooldown_seconds: float = 3.0  # between two jobs of one user


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """How one key is validated: its type and bounds."""

    key: str
    kind: type
    low: float | None = None
    high: float | None = None
    is_limit: bool = True  # limits may also be overridden per user


SETTING_SPECS: dict[str, SettingSpec] = {
    spec.key: spec
    for spec in (
        SettingSpec('daily_imagines', int, 0, 10_000),
        SettingSpec('daily_edits', int, 0, 10_000),
        SettingSpec('pending_per_user', int, 0, 1_000),
        SettingSpec('queue_cap', int, 0, 1_000_000),
        SettingSpec('candidates_per_imagine', int, 1, 16),
        SettingSpec('expand_steps', int, 1, 2_000),
        SettingSpec('cooldown_seconds', float, 0, 86_400),
        SettingSpec('blocked_words', list, is_limit=False),  # list[str], matched as whole words, any case
        SettingSpec('allowed_channel_ids', list, is_limit=False),  # list[int]; empty: every channel
        SettingSpec('admin_role_id', int, is_limit=False),  # int or None
        SettingSpec('disabled_operations', list, is_limit=False),  # list[str]: operations switched off here
    )
}
#: old names still accepted when setting a value (`daily_expands` counted expands before every edit shared it)
SETTING_ALIASES: dict[str, str] = {'daily_expands': 'daily_edits'}
assert {f.name for f in fields(Limits)} == {k for k, s in SETTING_SPECS.items() if s.is_limit}


@dataclass(frozen=True, slots=True)
class GuildSettings:
    """What a guild's admins have set, with defaults filled in."""

    guild_id: int
    limits: Limits = Limits()
    blocked_words: tuple[str, ...] = ()
    allowed_channel_ids: tuple[int, ...] = ()  # empty: every channel
    admin_role_id: int | None = None
    disabled_operations: tuple[str, ...] = ()  # operation names switched off in this guild

    def channel_allowed(self, channel_id: int | None) -> bool:
        return not self.allowed_channel_ids or channel_id in self.allowed_channel_ids


@dataclass(frozen=True, slots=True)
class Quota:
    """A user's daily quotas per bucket (`daily_imagines`, `daily_edits`): used, limit, and the reset (UTC midnight)."""

    used: Mapping[str, int]
    limits: Mapping[str, int]
    resets_at: float  # Unix seconds, the next 00:00 UTC

    def left(self, bucket: str) -> int:
        return max(0, self.limits.get(bucket, 0) - self.used.get(bucket, 0))

    @property
    def imagines_used(self) -> int:
        return self.used.get('daily_imagines', 0)

    @property
    def imagines_limit(self) -> int:
        return self.limits.get('daily_imagines', 0)

    @property
    def imagines_left(self) -> int:
        return self.left('daily_imagines')

    @property
    def edits_used(self) -> int:
        return self.used.get('daily_edits', 0)

    @property
    def edits_limit(self) -> int:
        return self.limits.get('daily_edits', 0)

    @property
    def edits_left(self) -> int:
        return self.left('daily_edits')


def day_bounds(now: float) -> tuple[float, float]:
    """The UTC day holding `now`: (its 00:00, the next 00:00) in Unix seconds."""
    start = (now // DAY_SECONDS) * DAY_SECONDS
    return start, start + DAY_SECONDS


def canonical_key(key: str) -> str:
    """A setting's current name (`daily_expands` → `daily_edits`)."""
    return SETTING_ALIASES.get(key, key)


def require_limit(key: str, why: str = '') -> None:
    """Refuse a setting key that is not a limit (blocked words, channels and roles are not numbers)."""
    key = canonical_key(key)
    if key not in SETTING_SPECS or not SETTING_SPECS[key].is_limit:
        raise InvalidSetting(f'{key!r} is not a limit{why}.')


def validate_setting(key: str, value: Any) -> Any:
    """Check and normalise one value; `None` means "back to the default". Raises `InvalidSetting`."""
    key = canonical_key(key)
    spec = SETTING_SPECS.get(key)
    if spec is None:
        raise InvalidSetting(f'There is no setting called {key!r}. Known settings: {", ".join(SETTING_SPECS)}.')
    if value is None:
        return None
    if spec.kind is list:
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise InvalidSetting(f'{key} takes a list.')
        if key in ('blocked_words', 'disabled_operations'):
            return sorted({str(word).strip().lower() for word in value if str(word).strip()})
        try:
            return sorted({int(item) for item in value})
        except (TypeError, ValueError):
            raise InvalidSetting(f'{key} takes a list of ids.') from None
    try:
        number = spec.kind(value)
    except (TypeError, ValueError):
        raise InvalidSetting(f'{key} takes a number.') from None
    if isinstance(value, bool) or (spec.kind is int and isinstance(value, float) and not value.is_integer()):
        raise InvalidSetting(f'{key} takes a whole number.')
    if (spec.low is not None and number < spec.low) or (spec.high is not None and number > spec.high):
        raise InvalidSetting(f'{key} must be between {spec.low:g} and {spec.high:g}.')
    return number


def apply_layers(base: Limits, layers: Iterable[Mapping[str, Any]]) -> Limits:
    """`base` with each layer's limit keys applied in order; other keys are ignored."""
    limits = base
    for layer in layers:
        values = {k: v for k, v in layer.items() if k in SETTING_SPECS and SETTING_SPECS[k].is_limit and v is not None}
        if values:
            limits = replace(limits, **values)
    return limits


def settings_from_layers(guild_id: int, layers: Iterable[Mapping[str, Any]]) -> GuildSettings:
    """Build `GuildSettings` from the bot-wide and guild layers (later layers win)."""
    layers = list(layers)
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if v is not None})
    return GuildSettings(
        guild_id=guild_id,
        limits=apply_layers(Limits(), layers),
        blocked_words=tuple(merged.get('blocked_words', ())),
        allowed_channel_ids=tuple(merged.get('allowed_channel_ids', ())),
        admin_role_id=merged.get('admin_role_id'),
        disabled_operations=tuple(merged.get('disabled_operations', ())),
    )


def find_blocked_word(text: str, blocked_words: Iterable[str]) -> str | None:
    """The first blocked word that appears in `text` as a whole word (any case), or None."""
    lowered = text.lower()
    for word in blocked_words:
        if re.search(rf'(?<!\w){re.escape(word)}(?!\w)', lowered):
            return word
    return None
