"""Limits admins tune, their defaults, and how the layers combine.

A limit is resolved in layers, each overriding the one before where it sets a value:

    code defaults (`Limits()`) → bot-wide settings (guild 0) → the guild's settings
    → the user's override everywhere (guild 0) → the user's override in the guild

Settings are stored one key per row (`guild_settings`, `user_overrides`) as JSON, so a new limit needs
no migration, only a `SettingSpec` here. Quotas count the user's jobs across all guilds (the GPU is one
shared resource); the limit that applies is the one of the guild where the job is asked for.
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from edalle import blocked_words as word_filter
from edalle.errors import InvalidSetting
from edalle.invisible import strip_invisible
from edalle.jobs.ids import fits

log = logging.getLogger(__name__)

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
    expand_steps: int = 200  # optimiser steps of every optimising job (expand, zoom, pan, square, dream): asked and most
    max_canvas_px: int = 1024  # the longest side of any picture an optimising job makes (a canvas), in pixels
    upscale_max_pixels: int = 512 * 512  # the largest picture (width × height) one upscale ×4 takes
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
        SettingSpec('max_canvas_px', int, 16, 4096),
        SettingSpec('upscale_max_pixels', int, 16 * 16, 4096 * 4096),
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
    """Check and normalise one value; `None` means "back to the default". Raises `InvalidSetting`.

    Values come as admins type them (`.admin set cooldown_seconds 2.5` passes the string '2.5') or as
    numbers. A limit must be a finite number inside its bounds: `nan` compares false with every bound, so it
    once slipped past them and `.admin` showed "nan"; `inf`, `1e999` and huge integers are refused the same
    way, and `-0` is kept as 0.
    """
    key = canonical_key(key)
    spec = SETTING_SPECS.get(key)
    if spec is None:
        raise InvalidSetting(f'There is no setting called {key!r}. Known settings: {", ".join(SETTING_SPECS)}.')
    if value is None:
        return None
    if spec.kind is list:
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise InvalidSetting(f'{key} takes a list.')
        if key == 'blocked_words':
            return _blocked_words(value)
        if key == 'disabled_operations':
            return sorted({str(name).strip().lower() for name in value if str(name).strip()})
        return sorted({_discord_id(key, item, 'a list of channel ids') for item in value})
    if key == 'admin_role_id':
        return _discord_id(key, value, 'a role id')
    return _number(key, spec, value)


def _blocked_words(words: Iterable[Any]) -> list[str]:
    """Blocked words as stored: lower case, without invisible characters, a `*` only at the end (a prefix)."""
    cleaned = {strip_invisible(str(word)).strip().lower() for word in words}
    for word in cleaned:
        if '*' in word.rstrip('*') or word.endswith('**') or word == '*':
            raise InvalidSetting(
                f'“{word}”: a * may only end a blocked word (`blood*` blocks every word that starts with blood).'
            )
    return sorted(word for word in cleaned if word)


def _number(key: str, spec: SettingSpec, value: Any) -> int | float:
    """A limit's value: a finite int or float within `spec`'s bounds, from a number or the text of one."""
    whole = spec.kind is int
    wanted = f'{key} takes a {"whole number" if whole else "number"}'
    if spec.low is not None and spec.high is not None:
        wanted += f' between {spec.low:g} and {spec.high:g}'
    wanted += '.'
    if isinstance(value, bool):  # an int to Python, not a number to an admin
        raise InvalidSetting(wanted)
    number: int | float
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)  # exact for any size (a float would round 2**63 + 1)
        except ValueError:
            try:
                number = float(text)  # '2.5', '1e3', 'nan', 'inf', '1e999' (which is inf)
            except ValueError:
                raise InvalidSetting(wanted) from None
    elif isinstance(value, int | float):
        number = value
    else:
        raise InvalidSetting(wanted)
    if isinstance(number, float):
        if not math.isfinite(number) or (whole and not number.is_integer()):
            raise InvalidSetting(wanted)
    if (spec.low is not None and number < spec.low) or (spec.high is not None and number > spec.high):
        raise InvalidSetting(wanted)
    return int(number) if whole else float(number) + 0.0  # + 0.0 turns -0.0 into 0.0


def _discord_id(key: str, value: Any, what: str) -> int:
    """A channel or role id: a positive int a store's id column can hold, from a number or its text."""
    try:
        number = int(value.strip()) if isinstance(value, str) else operator.index(value)
    except (TypeError, ValueError):
        raise InvalidSetting(f'{key} takes {what}.') from None
    if isinstance(value, bool) or number <= 0 or not fits(number):
        raise InvalidSetting(f'{key} takes {what}.')
    return number


def _stored_limit(key: str, value: Any) -> Any:
    """A limit as read back from the database, or None (the layer below applies) when it is not valid now:
    a database written before `validate_setting` refused `nan` may still hold one."""
    try:
        return validate_setting(key, value)
    except InvalidSetting:
        log.warning('ignoring the stored value %r of %s: %s', value, key, 'not a valid limit')
        return None


def apply_layers(base: Limits, layers: Iterable[Mapping[str, Any]]) -> Limits:
    """`base` with each layer's valid limit values applied in order; other keys are ignored."""
    limits = base
    for layer in layers:
        values = {k: _stored_limit(k, v) for k, v in layer.items() if k in SETTING_SPECS and SETTING_SPECS[k].is_limit}
        values = {k: v for k, v in values.items() if v is not None}
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
    """The first of `blocked_words` (as the admin wrote it) that `text` contains, or None.

    The one check every text a member sends to an operation goes through (prompts, negative prompts, remix
    and region prompts), in the bot and again in the enqueue transaction. Whole words, through disguises:
    case, accents, look-alike letters, invisible characters, leetspeak, spelled-out letters, plurals, and
    `word*` for every word that starts with it; see `edalle.blocked_words` for what is matched and what is not.
    """
    return word_filter.find_blocked_word(text, blocked_words)
