"""What every `edalle` process does first: read `.env`, set up logging, and say what it runs on.

One place for it, so that every command reads the same settings: with `EDALLE_DATA_DIR` in `.env`,
`edalle models download` fills the same data dir that `edalle bot` then reads. The CLI entry point calls
`load_env_file` and `configure_logging` once for every command; the worker child that `edalle bot`
starts inherits the environment and calls `configure_logging` itself (`python -m edalle.worker`).

The start-up banner (`log_banner`) and the two warnings about set-ups that run but run wrong (a
PostgreSQL job store beside a local result store; torch on a GPU while JAX samples on the CPU) live here
too. Nothing here imports jax or torch: `log_devices` reports the frameworks a process has already
imported, so the bot (which never imports them) stays light.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from edalle import __version__

log = logging.getLogger(__name__)

LOG_FORMAT = '%(asctime)s %(levelname)-7s %(name)s: %(message)s'
LOG_LEVELS = ('DEBUG', 'INFO', 'WARNING', 'ERROR')
#: the loggers whose INFO lines an operator wants; every other library (JAX's compilation cache, the HTTP clients'
#: one line per request, file locks) speaks only at WARNING and above unless the level is DEBUG
OWN_LOGGERS = ('edalle', 'bot', 'discord')
GPU_INSTALL_HINT = "pip install -e '.[worker,cuda]'"


def load_env_file(path: Path | None = Path('.env')) -> Path | None:
    """Put the variables of a `.env` file into `os.environ`; a variable already set (in the shell) wins.

    Returns the file when there was one. Into `os.environ` rather than a mapping passed around, so the
    engine, the worker and the child processes the bot starts all see the same values.
    """
    if path is None or not path.is_file():
        return None
    from dotenv import load_dotenv

    load_dotenv(path, override=False)
    return path


def log_level(debug: bool = False, env: Mapping[str, str] = os.environ) -> str:
    """DEBUG with `--debug`, else `EDALLE_LOG_LEVEL` (default INFO); a ValueError names the choices."""
    if debug:
        return 'DEBUG'
    level = (env.get('EDALLE_LOG_LEVEL') or 'INFO').strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f'EDALLE_LOG_LEVEL must be one of {", ".join(LOG_LEVELS)} (got {level!r}).')
    return level


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record arrives, not the stream it was created with: tests
    that run the CLI in their own process swap stderr, and a closed one must not break later log lines."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_logging(level: str = 'INFO') -> None:
    """Log lines with a timestamp on stderr at `level`, for every command and process.

    One handler of our own on the root logger, replaced rather than added on a second call (tests call
    the CLI many times in one process); handlers others installed (pytest's) stay.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    chosen = logging.getLevelName(level)
    root.setLevel(chosen if chosen == logging.DEBUG else max(chosen, logging.WARNING))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(chosen)
    # discord.py's gateway logs every heartbeat at DEBUG: INFO is enough, even with --debug
    logging.getLogger('discord.gateway').setLevel(max(chosen, logging.INFO))


def log_banner(role: str, fields: Mapping[str, str]) -> None:
    """`edalle <version> <role>` and one aligned line per field: what an operator checks first in a log."""
    log.info('edalle %s %s', __version__, role)
    width = max((len(name) for name in fields), default=0)
    for name, value in fields.items():
        log.info('  %-*s  %s', width, name, value)


def result_store_warning(database_url: str | None, result_store: str | None) -> str | None:
    """A PostgreSQL job store means workers on other hosts; a local result store then loses their pictures."""
    if (database_url or '').strip().startswith(('postgresql://', 'postgres://')) and (result_store or 'local') == 'local':
        return (
            'PostgreSQL job store with a local result store: the bot reads result pictures from its own data dir, '
            'so this works only if the bot and every worker share that directory. With workers on other hosts '
            '(or in other containers with their own volumes) set EDALLE_RESULT_STORE=database (or s3).'
        )
    return None


def gpu_warning(torch_sees_gpu: bool, jax_backend: str | None) -> str | None:
    """torch on a GPU while JAX has only the CPU: the install took CPU-only jaxlib beside a CUDA torch."""
    if torch_sees_gpu and jax_backend == 'cpu':
        return (
            'torch sees a GPU but JAX runs on the CPU, so DalleBart samples on the CPU (many times slower) while '
            f'the VQGAN and CLIP use the GPU. Install JAX for CUDA: `{GPU_INSTALL_HINT}` (README: "On a GPU host").'
        )
    return None


def framework_devices(torch_device: str | None = None) -> dict[str, str]:
    """What JAX and torch compute on in this process; a framework this process has not imported is left out.

    `torch_device` is the device the engine was told to use (`--device`); None means its own rule: CUDA when
    torch sees one.
    """
    found: dict[str, str] = {}
    jax = sys.modules.get('jax')
    if jax is not None:
        kinds = sorted({device.device_kind for device in jax.devices()})
        found['JAX'] = f'{jax.default_backend()} ({", ".join(kinds)})'
    torch = sys.modules.get('torch')
    if torch is not None:
        device = torch_device or ('cuda' if torch.cuda.is_available() else 'cpu')
        name = torch.cuda.get_device_name(torch.device(device)) if device.startswith('cuda') else 'CPU'
        found['torch'] = f'{device} ({name})'
    return found


def log_devices(torch_device: str | None = None) -> None:
    """Log the devices in use once the models are loaded, and warn when JAX missed the GPU torch found."""
    found = framework_devices(torch_device)
    if not found:
        return
    log.info('devices: %s', '; '.join(f'{name} on {where}' for name, where in found.items()))
    torch = sys.modules.get('torch')
    jax = sys.modules.get('jax')
    if torch is not None and jax is not None:
        warning = gpu_warning(bool(torch.cuda.is_available()), jax.default_backend())
        if warning:
            log.warning('%s', warning)
