"""`edalle bot`: the one command that runs everything.

It reads its settings from the environment (the CLI has loaded `.env` into it, the shell's values
winning), checks what a first run gets wrong (no token, no model libraries for the local worker) and says
how to fix it, fetches the local worker's model files on first start (`--no-download` refuses instead),
logs a banner of what it runs with, opens the database (applying migrations), starts the supervised worker
child process unless `--no-worker`, runs the bot, and on Ctrl-C or SIGTERM stops both in order: the bot
first (no new jobs), then the worker (it hands running jobs back to the queue). Discord refusing the
token or the Message Content intent ends the process with one sentence saying what to change.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import signal
import sys

import aiohttp
import discord

from bot.settings import Settings, SettingsError
from edalle.startup import log_banner, result_store_warning

log = logging.getLogger(__name__)

CONFIG_ERROR = 2
RUNTIME_ERROR = 1
PORTAL = 'https://discord.com/developers/applications'

NO_TOKEN = (
    'DISCORD_TOKEN is not set. Create a Discord application and its bot user at '
    f'{PORTAL} (README: "Setting up the Discord application"), copy the bot token, and put '
    '`DISCORD_TOKEN=<token>` in a `.env` file in the directory you run `edalle bot` from (copy `.env.example`).'
)
BAD_TOKEN = (
    'Discord refused the bot token (401 Unauthorized). In '
    f'{PORTAL} open your application → Bot → Reset Token, and put the new token in `.env` as `DISCORD_TOKEN=…`.'
)
NO_INTENT = (
    'Discord refused the Message Content intent, which text commands like `.imagine` need. In '
    f'{PORTAL} open your application → Bot → Privileged Gateway Intents, turn on MESSAGE CONTENT INTENT, '
    'save, and start the bot again; or set EDALLE_TEXT_COMMANDS=0 to run with slash commands only.'
)
#: what the local worker imports that a bot-only install (`pip install .`, no `[worker]`) lacks
WORKER_MODULES = ('jax', 'flax', 'torch', 'open_clip', 'huggingface_hub')
NO_WORKER_LIBRARIES = (
    'The local worker needs the model libraries, which this install does not have ({missing}). Install them with '
    "`pip install -e '.[worker]'` (add `cuda` on a GPU host: `.[worker,cuda]`), or run the bot with --no-worker "
    'if workers run elsewhere (`edalle worker` on GPU hosts sharing the database).'
)


def add_bot_arguments(parser: argparse.ArgumentParser) -> None:
    from edalle.presets import PRESETS

    parser.add_argument('--no-worker', action='store_true', help='do not start a local worker (workers run elsewhere)')
    parser.add_argument(
        '--preset', choices=list(PRESETS), default=None, help='models for the local worker (default $EDALLE_PRESET or mini)'
    )
    parser.add_argument(
        '--no-download',
        action='store_true',
        help="refuse to start when the local worker's model files are missing instead of fetching them (EDALLE_DOWNLOAD=0)",
    )
    parser.add_argument('--sync', action='store_true', help='sync slash commands with Discord now, even if unchanged')


def run_bot(args: argparse.Namespace) -> int:
    env = dict(os.environ)  # `.env` is in it already: the CLI loaded it
    if getattr(args, 'data_dir', None):
        env['EDALLE_DATA_DIR'] = str(args.data_dir)
    if getattr(args, 'no_worker', False):
        env['EDALLE_WORKER'] = '0'
    if getattr(args, 'preset', None):
        env['EDALLE_PRESET'] = args.preset
    if getattr(args, 'no_download', False):
        env['EDALLE_DOWNLOAD'] = '0'
    if getattr(args, 'sync', False):
        env['EDALLE_SYNC_COMMANDS'] = 'always'
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return CONFIG_ERROR
    problem = preflight(settings)
    if problem is not None:
        print(f'error: {problem}', file=sys.stderr)
        return CONFIG_ERROR
    log_banner('bot', banner_fields(settings))
    if warning := result_store_warning(settings.database_url, settings.result_store):
        log.warning('%s', warning)
    problem = fetch_weights(settings)
    if problem is not None:
        print(f'error: {problem}', file=sys.stderr)
        return CONFIG_ERROR
    try:
        return asyncio.run(serve(settings, worker_env(env)))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


def banner_fields(settings: Settings) -> dict[str, str]:
    """What the bot runs with. Its devices are the local worker's, which logs its own banner with them."""
    from edalle.jobs.backends import describe

    return {
        'data dir': str(settings.data_dir.resolve()),
        'database': describe(settings.database_url, settings.database),
        'preset': f'{settings.preset} (local worker)' if settings.run_worker else 'none here: workers run elsewhere',
        'result store': settings.result_store,
        'commands': f'text ({settings.prefix}imagine) and slash' if settings.text_commands else 'slash only',
        'devices': "the local worker's (its banner follows)" if settings.run_worker else 'none: the bot runs no models',
    }


def preflight(settings: Settings) -> str | None:
    """The first-run mistakes, each with its fix; None when the bot can start.

    Missing model files are not one of them when the bot may fetch them (`fetch_weights`); with
    `--no-download` they are, and the message names the files and the ways to bring them.
    """
    if not settings.token:
        return NO_TOKEN
    if settings.run_worker:
        from edalle.presets import get_preset
        from edalle.weights import MissingWeights, require

        try:
            preset = get_preset(settings.preset)
        except ValueError as exc:
            return str(exc)
        missing = [name for name in WORKER_MODULES if importlib.util.find_spec(name) is None]
        if missing:
            return NO_WORKER_LIBRARIES.format(missing=', '.join(missing))
        if not preset.generated and not settings.download:  # `tiny` is generated by the worker on first use
            try:
                require(preset, settings.data_dir)
            except MissingWeights as exc:
                return f'{exc}\n(Or run the bot with --no-worker if workers with the weights run elsewhere.)'
    return None


def fetch_weights(settings: Settings) -> str | None:
    """First start: fetch the local worker's model files if any is missing (resumable, with a progress bar).

    Done here, in the foreground, rather than by the worker child: the operator sees the progress and any
    failure once, instead of a supervised child retrying in a back-off loop. None when the files are here.
    """
    if not settings.run_worker:
        return None
    from edalle.weights import MissingWeights, fetch_missing

    try:
        fetch_missing(settings.preset, settings.data_dir, allowed=settings.download, log=log.info)
    except MissingWeights as exc:
        return f'{exc}\n(Or run the bot with --no-worker if workers with the weights run elsewhere.)'
    return None


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """The worker's environment: the bot's, without the Discord token (it never talks to Discord)."""
    return {k: v for k, v in env.items() if k != 'DISCORD_TOKEN'}


def explain(exc: BaseException, settings: Settings) -> str:
    if isinstance(exc, discord.LoginFailure):
        return BAD_TOKEN
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return NO_INTENT
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        where = settings.api_base or 'discord.com'
        return (
            f'Could not reach Discord at {where}: {exc.__class__.__name__}: {exc}. Check the network (and DISCORD_API_BASE).'
        )
    return f'The bot stopped: {exc.__class__.__name__}: {exc}'


async def serve(settings: Settings, child_env: dict[str, str]) -> int:
    """Run until the bot fails or a signal arrives; always stop the bot, the worker and the store."""
    from bot.bot import EDalleBot
    from bot.loop_monitor import start_loop_monitor
    from bot.supervisor import WorkerSupervisor, worker_argv, worker_env_with_threads, worker_threads
    from edalle.jobs.backends import open_store
    from edalle.jobs.result_store import open_result_store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    monitor = start_loop_monitor(child_env, settings.data_dir)  # EDALLE_LOOP_MONITOR=1: bot/loop_monitor.py
    # SQLite in the data dir, or PostgreSQL when EDALLE_DATABASE_URL is set; applies migrations, refuses a newer schema
    store = await open_store(settings.database_url, settings.database)
    supervisor = None
    results = None
    code = 0
    try:
        results = await open_result_store(
            settings.result_store, data_dir=settings.data_dir, database_url=settings.database_url, env=child_env
        )
        if settings.run_worker:
            argv = worker_argv(
                preset=settings.preset, data_dir=settings.data_dir, database=settings.database, extra=settings.worker_args
            )
            # At lower CPU priority, and on a small host with a core left for the bot's loop (bot/supervisor.py).
            env = worker_env_with_threads(child_env, worker_threads(settings.worker_threads))
            supervisor = WorkerSupervisor(argv, env=env, nice=settings.worker_nice)
            await supervisor.start()
        bot = EDalleBot(settings=settings, store=store, worker_status=supervisor, results=results)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        bot_task = asyncio.create_task(bot.start(settings.token), name='edalle-bot')
        stop_task = asyncio.create_task(stopping.wait(), name='edalle-signals')
        try:
            done, _ = await asyncio.wait({bot_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if bot_task in done and bot_task.exception() is not None:
                print(f'error: {explain(bot_task.exception(), settings)}', file=sys.stderr)  # type: ignore[arg-type]
                code = CONFIG_ERROR if isinstance(bot_task.exception(), discord.ClientException) else RUNTIME_ERROR
            elif stop_task in done:
                log.info('shutting down')
        finally:
            stop_task.cancel()
            await bot.close()
            if not bot_task.done():
                bot_task.cancel()
            await asyncio.gather(bot_task, return_exceptions=True)
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    finally:
        if supervisor is not None:
            await supervisor.stop()
        if results is not None:
            await results.close()
        await store.close()
        if monitor is not None:
            await monitor.stop()
    log.info('stopped')
    return code
