"""The bot's settings: read once from the environment, then passed in.

Nothing else in `bot/` reads `os.environ`; the launcher builds one frozen `Settings` and hands it to
`EDalleBot` (discord.py's `advanced_startup.py` pattern), so tests can build one by hand. The `.env`
file is already in the environment by then: the CLI loads it for every command (`edalle.startup`).
`.env.example` documents every variable here, with the same defaults.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_TRUE = {'1', 'true', 'yes', 'on'}
_FALSE = {'0', 'false', 'no', 'off'}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


def _flag(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None or not raw.strip():  # unset or empty (`KEY=` in .env): the default
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise SettingsError(f'{key} must be 1 or 0 (got {raw!r}).')


def _number(env: Mapping[str, str], key: str, default: float, kind: type = float) -> float:
    raw = env.get(key, '').strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f'{key} must be a number (got {raw!r}).') from None


def _optional_int(env: Mapping[str, str], key: str) -> int | None:
    raw = env.get(key, '').strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f'{key} must be a whole number, e.g. a server id (got {raw!r}).') from None


def _choice(env: Mapping[str, str], key: str, choices: tuple[str, ...]) -> str:
    raw = env.get(key, '').strip().lower() or choices[0]
    if raw not in choices:
        raise SettingsError(f'{key} must be one of {", ".join(choices)} (got {raw!r}).')
    return raw


@dataclass(frozen=True)
class Settings:
    """Everything the bot process is configured with. Field comments give the environment variable."""

    token: str = field(default='', repr=False)  # DISCORD_TOKEN (never logged: repr=False)
    data_dir: Path = Path('data')  # EDALLE_DATA_DIR: models, edalle.db, images/
    db_path: Path | None = None  # EDALLE_DB (default <data dir>/edalle.db)
    database_url: str | None = field(default=None, repr=False)  # EDALLE_DATABASE_URL: postgresql://… (workers elsewhere)
    result_store: str = 'local'  # EDALLE_RESULT_STORE: local, database or s3 (where workers put result files)
    preset: str = 'mini'  # EDALLE_PRESET: the models the local worker loads (mini, mega, tiny)
    prefix: str = '.'  # EDALLE_PREFIX: the prefix of text commands
    api_base: str | None = None  # DISCORD_API_BASE: e.g. http://127.0.0.1:8080/api/v10 for a Discord-compatible server
    gateway_url: str | None = None  # DISCORD_GATEWAY_URL: e.g. ws://127.0.0.1:8080/
    run_worker: bool = True  # EDALLE_WORKER=0 (or --no-worker): workers run elsewhere
    download: bool = True  # EDALLE_DOWNLOAD=0 (or --no-download): refuse to start without the model files
    text_commands: bool = True  # EDALLE_TEXT_COMMANDS=0: slash commands only, no Message Content intent needed
    worker_args: tuple[str, ...] = ()  # EDALLE_WORKER_ARGS: extra flags for `python -m edalle.worker`
    worker_nice: int = 10  # EDALLE_WORKER_NICE: the local worker's CPU priority below the bot's (0: the same)
    worker_threads: int | None = None  # EDALLE_WORKER_THREADS: its math threads (None: cores - 1 on ≤ 4 cores; 0: all)
    sync_commands: str = 'auto'  # EDALLE_SYNC_COMMANDS: auto (when they changed), always, never
    dev_guild_id: int | None = None  # EDALLE_DEV_GUILD_ID: sync slash commands to this server only (instant)
    progress_seconds: float = 3.0  # EDALLE_PROGRESS_SECONDS: at most one progress edit per message this often
    preview_seconds: float = 15.0  # EDALLE_PREVIEW_SECONDS: at most one expand preview image this often
    delivery_lease_seconds: float = 60.0  # EDALLE_DELIVERY_LEASE_SECONDS: how long a result post may take
    max_upload_bytes: int | None = None  # EDALLE_MAX_UPLOAD_BYTES: cap below the server's upload limit
    max_prompt_chars: int = 200  # EDALLE_MAX_PROMPT_CHARS: longer prompts are cut (DALL·E mini reads ~64 tokens)
    guild_ready_timeout: float = 2.0  # EDALLE_GUILD_READY_TIMEOUT: discord.py's wait for the server list
    log_level: str = 'INFO'  # EDALLE_LOG_LEVEL

    @property
    def database(self) -> Path:
        return self.db_path or self.data_dir / 'edalle.db'

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build from a mapping of environment variables (`os.environ`, with `.env` loaded into it)."""
        sync = env.get('EDALLE_SYNC_COMMANDS', 'auto').strip().lower() or 'auto'
        if sync not in ('auto', 'always', 'never'):
            raise SettingsError(f'EDALLE_SYNC_COMMANDS must be auto, always or never (got {sync!r}).')
        data_dir = Path(env.get('EDALLE_DATA_DIR') or 'data')
        db = env.get('EDALLE_DB', '').strip()
        return cls(
            token=env.get('DISCORD_TOKEN', '').strip(),
            data_dir=data_dir,
            db_path=Path(db) if db else None,
            database_url=env.get('EDALLE_DATABASE_URL', '').strip() or None,
            result_store=_choice(env, 'EDALLE_RESULT_STORE', ('local', 'database', 's3')),
            preset=env.get('EDALLE_PRESET', '').strip() or 'mini',
            prefix=env.get('EDALLE_PREFIX', '') or '.',
            api_base=env.get('DISCORD_API_BASE', '').strip().rstrip('/') or None,
            gateway_url=env.get('DISCORD_GATEWAY_URL', '').strip() or None,
            run_worker=_flag(env, 'EDALLE_WORKER', True),
            download=_flag(env, 'EDALLE_DOWNLOAD', True),
            text_commands=_flag(env, 'EDALLE_TEXT_COMMANDS', True),
            worker_args=tuple(shlex.split(env.get('EDALLE_WORKER_ARGS', ''))),
            worker_nice=int(_number(env, 'EDALLE_WORKER_NICE', 10, int)),
            worker_threads=_optional_int(env, 'EDALLE_WORKER_THREADS'),
            sync_commands=sync,
            dev_guild_id=_optional_int(env, 'EDALLE_DEV_GUILD_ID'),
            progress_seconds=_number(env, 'EDALLE_PROGRESS_SECONDS', 3.0),
            preview_seconds=_number(env, 'EDALLE_PREVIEW_SECONDS', 15.0),
            delivery_lease_seconds=_number(env, 'EDALLE_DELIVERY_LEASE_SECONDS', 60.0),
            max_upload_bytes=_optional_int(env, 'EDALLE_MAX_UPLOAD_BYTES'),
            max_prompt_chars=int(_number(env, 'EDALLE_MAX_PROMPT_CHARS', 200, int)),
            guild_ready_timeout=_number(env, 'EDALLE_GUILD_READY_TIMEOUT', 2.0),
            log_level=(env.get('EDALLE_LOG_LEVEL', '').strip() or 'INFO').upper(),
        )
