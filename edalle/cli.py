"""`edalle`: the command line. Subcommands: imagine, expand, vary, repaint, zoom, pan, square, dream, upscale,
models, worker, bot, status.

Every command first reads `.env` (`--env-file`; a variable set in the shell wins), so one file
configures them all, and logs in one format (`EDALLE_LOG_LEVEL`). The global options (`--data-dir`,
`--env-file`, `--debug`) may come before or after the subcommand.

Errors a user can fix (a bad prompt, missing weights, a bad ratio) print one short line on
stderr and exit with status 2; nothing a user can fix ever prints a traceback. `--debug`
shows tracebacks for everything else.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edalle import __version__
from edalle.presets import MODEL_SETS, PRESETS
from edalle.startup import configure_logging, load_env_file, log_level

USAGE_ERROR = 2


class UserError(Exception):
    """Raised for input problems; main() prints the message without a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse has already explained
        return int(exc.code or 0)
    load_env_file(args.env_file)  # before anything reads the environment
    try:
        configure_logging(log_level(args.debug))
    except ValueError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return USAGE_ERROR
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug or not _is_user_error(exc):
            raise
        print(f'error: {exc}', file=sys.stderr)
        return USAGE_ERROR


def _is_user_error(exc: Exception) -> bool:
    from edalle.errors import AdmissionRefused
    from edalle.presets import UnknownPreset
    from edalle.weights import MissingWeights

    # AdmissionRefused: an operation's refusal (a RequestError, a picture over the upscale cap), worded for members
    user_errors: tuple[type[Exception], ...] = (UserError, AdmissionRefused, UnknownPreset, MissingWeights)
    user_errors += (FileNotFoundError,)
    try:
        from edalle.text import PromptError

        user_errors += (PromptError,)
    except ImportError:
        pass
    try:
        from edalle.expander.errors import ExpandError

        user_errors += (ExpandError,)
    except ImportError:
        pass
    return isinstance(exc, user_errors)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='edalle', description=__doc__.splitlines()[0])
    parser.add_argument('--version', action='version', version=f'edalle {__version__}')
    add_global_options(parser, top=True)
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    imagine = subcommand(commands, 'imagine', help='draw ranked candidates for a prompt')
    imagine.add_argument('prompt', help='what to draw, in English, e.g. "a lighthouse in a storm, oil painting"')
    add_preset_option(imagine, PRESETS, 'models to draw with')
    imagine.add_argument('-n', type=int, default=9, help='number of candidates (1–16, default 9)')
    imagine.add_argument('--seed', type=int, default=None, help='sampling seed (default: random, recorded)')
    imagine.add_argument('--temperature', '--temp', type=float, default=None, help='randomness of the drawing (default 1)')
    imagine.add_argument(
        '--top-k', '--topk', type=int, default=None, help='draw from this many likeliest codes; 0 for all (default 50)'
    )
    imagine.add_argument(
        '--top-p',
        '--topp',
        type=float,
        default=None,
        help='draw from the codes holding this share of probability (default off)',
    )
    imagine.add_argument(
        '--cond-scale', '--scale', type=float, default=None, help='how strongly the prompt steers (default 10)'
    )
    imagine.add_argument(
        '--no', dest='negative', default=None, help='a negative prompt: what to avoid, e.g. "text, watermark"'
    )
    imagine.add_argument('--out', type=Path, default=None, help='output directory (default out/<time>-<prompt>)')
    imagine.add_argument('--dtype', choices=('float32', 'bfloat16', 'float16'), default=None, help='DalleBart compute type')
    imagine.set_defaults(handler=run_imagine)

    _add_expand_parser(commands)
    _add_variation_parsers(commands)
    _add_canvas_parsers(commands)
    _add_models_parser(commands)
    _add_worker_parser(commands)
    _add_bot_parser(commands)
    _add_status_parser(commands)
    return parser


def add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """`--debug`, `--data-dir`, `--env-file`: on `edalle` itself and again on every subcommand.

    On a subcommand their default is SUPPRESS, so a value given before the subcommand is kept unless the
    same option is given again after it.
    """

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument('--debug', action='store_true', default=default(False), help='show tracebacks and debug logs')
    parser.add_argument(
        '--data-dir',
        type=Path,
        default=default(None),
        help='models, database and images (default $EDALLE_DATA_DIR or ./data)',
    )
    parser.add_argument(
        '--env-file',
        type=Path,
        default=default(Path('.env')),
        help="settings file read before anything else; the shell's variables win (default ./.env)",
    )


def subcommand(commands: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand parser that also takes the global options (a later definition of one of them wins)."""
    parser = commands.add_parser(name, conflict_handler='resolve', **kwargs)
    add_global_options(parser, top=False)
    return parser


def add_preset_option(parser: argparse.ArgumentParser, choices: Any, what: str) -> None:
    """`--preset`, whose default is read when the command runs: `.env` may set EDALLE_PRESET."""
    parser.add_argument('--preset', choices=list(choices), default=None, help=f'{what} (default $EDALLE_PRESET or mini)')


def preset_of(args: argparse.Namespace) -> str:
    return args.preset or os.environ.get('EDALLE_PRESET') or 'mini'


# --------------------------------------------------------------------------- imagine


def run_imagine(args: argparse.Namespace) -> int:
    from edalle.engine import Engine
    from edalle.operations.imagine import ImagineRequest, Knobs, validate, write_result

    given = {'temperature': args.temperature, 'top_p': args.top_p, 'cond_scale': args.cond_scale, 'negative': args.negative}
    knobs = {name: value for name, value in given.items() if value is not None}
    if args.top_k is not None:
        knobs['top_k'] = args.top_k or None  # 0: every code
    request = ImagineRequest(prompt=args.prompt, n=args.n, seed=args.seed, knobs=Knobs.of(knobs))
    validate(request)  # fail before loading models
    preset = preset_of(args)
    out = args.out or Path('out') / f'{time.strftime("%Y%m%d-%H%M%S")}-{_slug(args.prompt)}'
    started = time.perf_counter()
    with StageBars() as bars:
        engine = Engine.load(preset, args.data_dir, dtype=args.dtype, progress=bars.update)
    load_seconds = time.perf_counter() - started
    with StageBars() as bars:
        (result,) = engine.imagine([request], progress=bars.update)
    result.timings['load'] = load_seconds
    write_result(result, out, extra={'preset': preset, 'n': args.n})
    if result.truncated:
        print(f'note: the prompt had {result.token_count} tokens; only the first 64 were used.', file=sys.stderr)
    best = result.candidates[0]
    print(f'{out}: {len(result.candidates)} candidates, best CLIP score {best.score:.2f} (seed {best.seed})')
    return 0


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-')[:limit] or 'prompt'


class StageBars:
    """One progress bar on stderr that follows the stages of a long step ('load 2/5', 'sample 128/256', …).

    Stages named in `BYTE_STAGES` (hashing, copying) count bytes and show sizes and speed.
    """

    BYTE_STAGES = ('hash', 'copy')

    def __init__(self) -> None:
        self._bar: Any = None
        self._stage: str | None = None

    def __enter__(self) -> StageBars:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, stage: str, done: int, total: int, preview: Any = None) -> None:
        from tqdm import tqdm

        if stage != self._stage:
            if self._bar is not None:
                self._bar.close()
            in_bytes = stage.split(' ', 1)[0] in self.BYTE_STAGES
            units: dict[str, Any] = {'unit': 'B', 'unit_scale': True, 'unit_divisor': 1024} if in_bytes else {}
            self._bar = tqdm(total=total, desc=stage, file=sys.stderr, dynamic_ncols=True, leave=False, **units)
            self._stage = stage
        self._bar.total = total
        self._bar.update(done - self._bar.n)


# --------------------------------------------------------------------------- expand


def _add_expand_parser(commands: Any) -> None:
    expand = subcommand(commands, 'expand', help='widen a picture to another aspect ratio (E-DALL-E)')
    expand.add_argument('source', type=Path, help='an imagine manifest.json (or its directory) or an image file')
    expand.add_argument('--index', type=int, default=1, help='which candidate of a manifest, 1 = best (default 1)')
    expand.add_argument('--ratio', default='16:9', help='target ratio, e.g. 16:9, 9:16, 21:9, 4:3, 2:1 (default 16:9)')
    expand.add_argument('--prompt', default=None, help='guidance text (default: the source job prompt)')
    expand.add_argument('--steps', type=int, default=None, help='optimisation steps (default: the method default)')
    expand.add_argument(
        '--method',
        choices=('default', 'classic'),
        default='default',
        help='default (exact centre, even views) or classic (the original E-DALL-E, step for step)',
    )
    expand.add_argument('--seed', type=int, default=None, help='optimisation seed (default: random, printed)')
    add_preset_option(expand, PRESETS, 'models to use (its VQGAN and CLIP)')
    expand.add_argument(
        '--out', type=Path, default=None, help='output file, .png, .webp or .jpg (default out/<time>-<source>-<ratio>.png)'
    )
    expand.add_argument('--timelapse', type=Path, default=None, help='also write the time-lapse (.gif or .webp)')
    expand.add_argument(
        '--timelapse-bytes', type=int, default=10 * 2**20, help='the most the time-lapse may weigh (default 10 MiB)'
    )
    expand.set_defaults(handler=_run_expand)


def _run_expand(args: argparse.Namespace) -> int:
    try:
        from edalle.expander.cli import run_expand
    except ImportError as exc:
        raise UserError('The expander is not installed in this build.') from exc
    args.preset = preset_of(args)
    return run_expand(args, StageBars)


# --------------------------------------------------------------------------- vary and repaint


def _add_variation_parsers(commands: Any) -> None:
    from edalle.variation_cli import add_variation_parsers

    add_variation_parsers(commands, _run_variation, subcommand, add_preset_option)


def _run_variation(args: argparse.Namespace) -> int:
    from edalle.variation_cli import run_variation_command

    args.preset = preset_of(args)
    return run_variation_command(args, StageBars)


# --------------------------------------------------------------------------- zoom, pan, square, dream, upscale


def _add_canvas_parsers(commands: Any) -> None:
    from edalle.canvas_cli import add_canvas_parsers, add_upscale_parser

    add_canvas_parsers(commands, _run_canvas, subcommand, add_preset_option)
    add_upscale_parser(commands, _run_upscale, subcommand, add_preset_option)


def _run_canvas(args: argparse.Namespace) -> int:
    from edalle.canvas_cli import run_canvas_command

    return run_canvas_command(args, StageBars)


def _run_upscale(args: argparse.Namespace) -> int:
    from edalle.canvas_cli import run_upscale_command

    return run_upscale_command(args, StageBars)


# --------------------------------------------------------------------------- models


def _add_models_parser(commands: Any) -> None:
    models = subcommand(commands, 'models', help='download, import, verify and list model files')
    verbs = models.add_subparsers(dest='verb', required=True, metavar='VERB')
    download = subcommand(verbs, 'download', help='fetch a preset from the Hugging Face Hub (resumable)')
    add_preset_option(download, MODEL_SETS, 'the preset or add-on to fetch')
    download.set_defaults(handler=_models_download)
    verify = subcommand(verbs, 'verify', help='check presence, hashes and shapes')
    add_preset_option(verify, MODEL_SETS, 'the preset or add-on to check')
    verify.add_argument('--quick', action='store_true', help='skip loading the weights to check shapes')
    verify.set_defaults(handler=_models_verify)
    imported = subcommand(verbs, 'import', help='take model files brought by hand')
    imported.add_argument('directory', type=Path, help='where the files are (searched with its subdirectories)')
    add_preset_option(imported, MODEL_SETS, 'the preset or add-on the files belong to')
    imported.set_defaults(handler=_models_import)
    listing = subcommand(verbs, 'list', help='the presets and add-ons, and whether their files are here')
    listing.set_defaults(handler=_models_list)


def _models_download(args: argparse.Namespace) -> int:
    from edalle.presets import data_dir_from_env
    from edalle.weights import download

    preset = preset_of(args)
    fetched = download(preset, data_dir_from_env(args.data_dir), log=lambda m: print(m, file=sys.stderr))
    print(f'{preset}: {len(fetched)} file(s) fetched; run `edalle models verify --preset {preset}` to check them.')
    return 0


def _models_verify(args: argparse.Namespace) -> int:
    from edalle.presets import data_dir_from_env
    from edalle.weights import verify

    preset = preset_of(args)
    with StageBars() as bars:
        checks = verify(preset, data_dir_from_env(args.data_dir), check_shapes=not args.quick, progress=bars.update)
    for check in checks:
        print(f'{"ok  " if check.ok else "FAIL"} {check.path}: {check.detail}')
    failed = [c for c in checks if not c.ok]
    if failed:
        print(f'{len(failed)} problem(s); re-run `edalle models download --preset {preset}` or import the files again.')
        return 1
    return 0


def _models_import(args: argparse.Namespace) -> int:
    from edalle.presets import data_dir_from_env
    from edalle.weights import import_dir

    preset = preset_of(args)
    with StageBars() as bars:
        report = import_dir(args.directory, preset, data_dir_from_env(args.data_dir), progress=bars.update)
    for path in report.copied:
        print(f'imported {path}')
    for line in report.rejected:
        print(f'refused {line}', file=sys.stderr)
    if report.missing:
        listed = ', '.join(str(p) for p in report.missing)
        print(f'still missing for {preset}: {listed}', file=sys.stderr)
        return 1
    print(f'{preset}: complete.')
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from edalle.presets import MODEL_SETS, data_dir_from_env, models_dir

    root = models_dir(data_dir_from_env(args.data_dir))
    width = max(len(name) for name in MODEL_SETS)
    for model_set in MODEL_SETS.values():  # the presets, then the add-ons (upscale)
        missing = model_set.missing_files(root)
        state = (
            'generated on first use'
            if model_set.generated and missing
            else ('ready' if not missing else f'{len(missing)} file(s) missing')
        )
        print(f'{model_set.name:{width}} {state:24} {model_set.description}')
    return 0


# --------------------------------------------------------------------------- worker and bot


def _add_worker_parser(commands: Any) -> None:
    from edalle.worker.main import add_worker_arguments

    worker = subcommand(commands, 'worker', help='run the GPU worker: claim jobs from the queue and run them')
    add_worker_arguments(worker)
    worker.set_defaults(handler=_run_worker)


def _run_worker(args: argparse.Namespace) -> int:
    from edalle.worker.main import run_worker

    return int(run_worker(args) or 0)


def _add_bot_parser(commands: Any) -> None:
    from bot.launcher import add_bot_arguments

    bot = subcommand(commands, 'bot', help='run the Discord bot (and a supervised worker)')
    add_bot_arguments(bot)
    bot.set_defaults(handler=_run_bot)


def _run_bot(args: argparse.Namespace) -> int:
    from bot.launcher import run_bot

    return int(run_bot(args) or 0)


def _add_status_parser(commands: Any) -> None:
    status = subcommand(
        commands, 'status', help='is the job database reachable, what waits in the queue, which workers are alive'
    )
    status.add_argument(
        '--database-url',
        default=None,
        help='postgresql://…: the shared job store (default $EDALLE_DATABASE_URL; unset: SQLite)',
    )
    status.add_argument(
        '--db', dest='database', type=Path, default=None, help='the SQLite file (default $EDALLE_DB or <data dir>/edalle.db)'
    )
    status.add_argument(
        '--require-worker',
        nargs='?',
        const='any',
        choices=('any', 'this-host'),
        default=None,
        help='unhealthy (exit 1) unless a worker is online: anywhere (any, the default), or on this host (this-host)',
    )
    status.set_defaults(handler=_run_status)


def _run_status(args: argparse.Namespace) -> int:
    import asyncio

    from edalle.health import check, verdict
    from edalle.presets import data_dir_from_env

    database_url = args.database_url or os.environ.get('EDALLE_DATABASE_URL') or None
    database = args.database or Path(os.environ.get('EDALLE_DB') or data_dir_from_env(args.data_dir) / 'edalle.db')
    code, lines = verdict(asyncio.run(check(database_url, database)), args.require_worker)
    print('\n'.join(lines))
    return code


if __name__ == '__main__':
    sys.exit(main())
