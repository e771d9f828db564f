"""`edalle`: the command line. Subcommands: imagine, expand, vary, repaint, models, worker, bot.

Errors a user can fix (a bad prompt, missing weights, a bad ratio) print one short line on
stderr and exit with status 2; nothing a user can fix ever prints a traceback. `--debug`
shows tracebacks for everything else.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

USAGE_ERROR = 2


class UserError(Exception):
    """Raised for input problems; main() prints the message without a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Libraries (jax, open_clip) log chatter at INFO; only our own INFO lines are worth showing.
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    logging.getLogger('edalle').setLevel(logging.DEBUG if args.debug else logging.INFO)
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
    from edalle.operations.base import RequestError
    from edalle.presets import UnknownPreset
    from edalle.weights import MissingWeights

    user_errors: tuple[type[Exception], ...] = (UserError, RequestError, UnknownPreset, MissingWeights, FileNotFoundError)
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
    parser.add_argument('--debug', action='store_true', help='show tracebacks and debug logs')
    parser.add_argument(
        '--data-dir', type=Path, default=None, help='models, database and images (default $EDALLE_DATA_DIR or ./data)'
    )
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    imagine = commands.add_parser('imagine', help='draw ranked candidates for a prompt')
    imagine.add_argument('prompt')
    imagine.add_argument('--preset', default='mini', help='mini (default), mega or tiny (random weights, draws noise)')
    imagine.add_argument('-n', type=int, default=9, help='number of candidates (1–16, default 9)')
    imagine.add_argument('--seed', type=int, default=None, help='sampling seed (default: random, recorded)')
    imagine.add_argument('--out', type=Path, default=None, help='output directory (default out/<time>-<prompt>)')
    imagine.add_argument('--dtype', choices=('float32', 'bfloat16', 'float16'), default=None, help='DalleBart compute type')
    imagine.set_defaults(handler=run_imagine)

    _add_expand_parser(commands)
    _add_vary_parser(commands)
    _add_repaint_parser(commands)
    _add_models_parser(commands)
    _add_worker_parser(commands)
    _add_bot_parser(commands)
    return parser


# --------------------------------------------------------------------------- imagine


def run_imagine(args: argparse.Namespace) -> int:
    from edalle.engine import Engine
    from edalle.operations.imagine import ImagineRequest, validate, write_result

    request = ImagineRequest(prompt=args.prompt, n=args.n, seed=args.seed)
    validate(request)  # fail before loading models
    out = args.out or Path('out') / f'{time.strftime("%Y%m%d-%H%M%S")}-{_slug(args.prompt)}'
    started = time.perf_counter()
    engine = Engine.load(args.preset, args.data_dir, dtype=args.dtype)
    load_seconds = time.perf_counter() - started
    with StageBars() as bars:
        (result,) = engine.imagine([request], progress=bars.update)
    result.timings['load'] = load_seconds
    write_result(result, out, extra={'preset': args.preset, 'n': args.n})
    if result.truncated:
        print(f'note: the prompt had {result.token_count} tokens; only the first 64 were used.', file=sys.stderr)
    best = result.candidates[0]
    print(f'{out}: {len(result.candidates)} candidates, best CLIP score {best.score:.2f} (seed {best.seed})')
    return 0


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-')[:limit] or 'prompt'


class StageBars:
    """One progress bar on stderr that follows the engine's stages ('sample 128/256', …)."""

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
            self._bar = tqdm(total=total, desc=stage, file=sys.stderr, dynamic_ncols=True, leave=False)
            self._stage = stage
        self._bar.total = total
        self._bar.update(done - self._bar.n)


# --------------------------------------------------------------------------- expand


def _add_expand_parser(commands: Any) -> None:
    expand = commands.add_parser('expand', help='widen a picture to another aspect ratio (E-DALL-E)')
    expand.add_argument('source', type=Path, help='an imagine manifest.json (or its directory) or an image file')
    expand.add_argument('--index', type=int, default=1, help='which candidate of a manifest, 1 = best (default 1)')
    expand.add_argument('--ratio', default='16:9', help='target ratio, e.g. 16:9, 9:16, 21:9, 4:3, 2:1 (default 16:9)')
    expand.add_argument('--prompt', default=None, help='guidance text (default: the source job prompt)')
    expand.add_argument('--steps', type=int, default=None, help='optimisation steps (default: the method default)')
    expand.add_argument('--method', choices=('default', 'classic'), default='default')
    expand.add_argument('--seed', type=int, default=None)
    expand.add_argument('--preset', default='mini', help='models to use (mini, mega or tiny)')
    expand.add_argument('--out', type=Path, required=True, help='output PNG file')
    expand.set_defaults(handler=_run_expand)


def _run_expand(args: argparse.Namespace) -> int:
    try:
        from edalle.expander.cli import run_expand
    except ImportError as exc:
        raise UserError('The expander is not installed in this build.') from exc
    return run_expand(args, StageBars)


# --------------------------------------------------------------------------- vary and repaint


def _add_vary_parser(commands: Any) -> None:
    vary = commands.add_parser('vary', help='redraw the lower part of a candidate, keeping its top token rows')
    vary.add_argument('manifest', type=Path, help='an imagine (or vary) manifest.json, or its directory')
    vary.add_argument('--index', type=int, default=1, help='which candidate, 1 = best (default 1)')
    vary.add_argument(
        '--strength',
        choices=('subtle', 'strong'),
        default='subtle',
        help='subtle: redraw the bottom quarter; strong: three quarters',
    )
    vary.add_argument('--prompt', default=None, help="what to draw (default: the manifest's prompt)")
    vary.add_argument('-n', type=int, default=9, help='number of variations (1–16, default 9)')
    vary.add_argument('--seed', type=int, default=None, help='sampling seed (default: random, recorded)')
    vary.add_argument('--preset', default='mini', help='models to use (mini, mega or tiny)')
    vary.add_argument('--dtype', choices=('float32', 'bfloat16', 'float16'), default=None, help='DalleBart compute type')
    vary.add_argument('--out', type=Path, required=True, help='output directory')
    vary.set_defaults(handler=run_vary)


def run_vary(args: argparse.Namespace) -> int:
    from edalle.engine import Engine
    from edalle.expander.sources import load_candidate
    from edalle.operations.vary import VaryRequest, validate, vary, write_vary_result

    source = load_candidate(args.manifest, args.index)
    request = VaryRequest(
        tokens=source.tokens,
        image=source.image,
        prompt=args.prompt if args.prompt is not None else (source.prompt or ''),
        strength=args.strength,
        n=args.n,
        seed=args.seed,
        knobs=_manifest_knobs(args.manifest),
    )
    validate(request)  # fail before loading models
    engine = Engine.load(args.preset, args.data_dir, dtype=args.dtype)
    with StageBars() as bars:
        (result,) = vary(engine, [request], progress=bars.update)
    origin = {'manifest': str(args.manifest), 'index': args.index}
    write_vary_result(result, args.out, extra={'preset': args.preset, 'n': args.n, 'source': origin})
    best = result.candidates[0]
    print(
        f'{args.out}: {len(result.candidates)} variations ({args.strength}), best score {best.score:.2f} (seed {best.seed})'
    )
    return 0


def _manifest_knobs(manifest: Path) -> Any:
    """The knobs a manifest's candidates were drawn with (defaults for manifests written before knobs)."""
    import json

    from edalle.operations.imagine import Knobs

    path = manifest / 'manifest.json' if manifest.is_dir() else manifest
    knobs = json.loads(path.read_text()).get('knobs')
    return Knobs.of(knobs) if isinstance(knobs, dict) else Knobs()


def _add_repaint_parser(commands: Any) -> None:
    repaint = commands.add_parser('repaint', help='redraw cells of a picture (A1–D4 on 256×256) under a new prompt')
    repaint.add_argument('source', type=Path, help='an imagine manifest.json (or its directory) or an image file')
    repaint.add_argument('--index', type=int, default=1, help='which candidate of a manifest, 1 = best (default 1)')
    repaint.add_argument('--region', required=True, help='cells to redraw: B2:C3 (a range) or A1,B1 (a list)')
    repaint.add_argument('--prompt', required=True, help='what the cells should show')
    repaint.add_argument(
        '--method',
        choices=('tokens', 'clip'),
        default='tokens',
        help='tokens (fast, 256×256) or clip (CLIP-guided, any size)',
    )
    repaint.add_argument('--steps', type=int, default=None, help='clip: optimisation steps (default: the method default)')
    repaint.add_argument('--init', choices=('edit', 'remove'), default='edit', help='clip: start from the picture or a blur')
    repaint.add_argument('--seed', type=int, default=None)
    repaint.add_argument('--preset', default='mini', help='models to use (mini, mega or tiny)')
    repaint.add_argument('--out', type=Path, required=True, help='output PNG file')
    repaint.set_defaults(handler=run_repaint)


def run_repaint(args: argparse.Namespace) -> int:
    from edalle.expander.cli import OUTPUT_SUFFIXES, _save
    from edalle.expander.sources import is_manifest, load_source

    if args.out.suffix.lower() not in OUTPUT_SUFFIXES or args.out.is_dir():
        raise UserError(f'--out must be a file ending in .png, .webp or .jpg (got {args.out}).')
    source = load_source(args.source, args.index, keep_aspect=True)  # a picture file keeps its own shape
    knobs = _manifest_knobs(args.source) if is_manifest(args.source) else None
    if args.method == 'tokens':
        image, seconds, note = _repaint_tokens(args, source, knobs)
    else:
        image, seconds, note = _repaint_clip(args, source)
    _save(image, args.out)
    print(f'{args.out}: {args.region.strip().upper()} repainted by {args.method} ({note}, {seconds:.1f} s)')
    return 0


def _repaint_tokens(args: argparse.Namespace, source: Any, knobs: Any) -> tuple[Any, float, str]:
    import numpy as np

    from edalle.engine import Engine
    from edalle.operations.imagine import Knobs
    from edalle.operations.repaint import CLIP_INSTEAD, RepaintRequest, repaint, validate
    from edalle.operations.token_grid import GRID_SIDE, tokens_of

    if source.image.size != (256, 256):
        raise UserError(
            f'Repainting by tokens needs a 256×256 picture; {source.origin} is {source.image.size[0]}×'
            f'{source.image.size[1]}.{CLIP_INSTEAD}'
        )
    placeholder = np.zeros((GRID_SIDE, GRID_SIDE), np.int32) if source.tokens is None else source.tokens
    request = RepaintRequest(placeholder, source.image, args.region, args.prompt, seed=args.seed, knobs=knobs or Knobs())
    validate(request)  # fail before loading models
    engine = Engine.load(args.preset, args.data_dir)
    if source.tokens is None:  # a picture file: its tokens are the VQGAN's encoding of it
        request = replace(request, tokens=tokens_of(engine, None, source.image))
    started = time.perf_counter()
    with StageBars() as bars:
        (result,) = repaint(engine, [request], progress=bars.update)
    best = result.samples[0]
    return (
        result.image,
        time.perf_counter() - started,
        f'best of {len(result.samples)}, score {best.score:.2f}, seed {best.seed}',
    )


def _repaint_clip(args: argparse.Namespace, source: Any) -> tuple[Any, float, str]:
    from edalle.expander.api import CanvasRequest, prepare_canvas, run
    from edalle.expander.canvas import canvas_for_region
    from edalle.expander.cli import _preset, load_models

    request = CanvasRequest(
        canvas=canvas_for_region(source.image.size, args.region),
        source_image=source.image,
        source_tokens=source.tokens,
        prompt=args.prompt,
        steps=args.steps,
        seed=args.seed,
        init=args.init,
    )
    request = replace(request, seed=prepare_canvas(request).seed)  # fail before loading models; the seed is printed
    vqgan, clip = load_models(_preset(args.preset), args.data_dir)
    started = time.perf_counter()
    with StageBars() as bars:
        result = run(vqgan, clip, request, progress=bars.update)
    return result.image, time.perf_counter() - started, f'{result.settings["steps"]} steps, seed {result.seed}'


# --------------------------------------------------------------------------- models


def _add_models_parser(commands: Any) -> None:
    models = commands.add_parser('models', help='download, import, verify and list model files')
    verbs = models.add_subparsers(dest='verb', required=True, metavar='VERB')
    download = verbs.add_parser('download', help='fetch a preset from the Hugging Face Hub (resumable)')
    download.add_argument('--preset', default='mini')
    download.set_defaults(handler=_models_download)
    verify = verbs.add_parser('verify', help='check presence, hashes and shapes')
    verify.add_argument('--preset', default='mini')
    verify.add_argument('--quick', action='store_true', help='skip loading the weights to check shapes')
    verify.set_defaults(handler=_models_verify)
    imported = verbs.add_parser('import', help='take model files brought by hand')
    imported.add_argument('directory', type=Path)
    imported.add_argument('--preset', default='mini')
    imported.set_defaults(handler=_models_import)
    listing = verbs.add_parser('list', help='the presets and whether their files are here')
    listing.set_defaults(handler=_models_list)


def _models_download(args: argparse.Namespace) -> int:
    from edalle.presets import data_dir_from_env
    from edalle.weights import download

    fetched = download(args.preset, data_dir_from_env(args.data_dir), log=lambda m: print(m, file=sys.stderr))
    print(f'{args.preset}: {len(fetched)} file(s) fetched; run `edalle models verify --preset {args.preset}` to check them.')
    return 0


def _models_verify(args: argparse.Namespace) -> int:
    from edalle.presets import data_dir_from_env
    from edalle.weights import verify

    checks = verify(args.preset, data_dir_from_env(args.data_dir), check_shapes=not args.quick)
    for check in checks:
        print(f'{"ok  " if check.ok else "FAIL"} {check.path}: {check.detail}')
    failed = [c for c in checks if not c.ok]
    if failed:
        print(f'{len(failed)} problem(s); re-run `edalle models download --preset {args.preset}` or import the files again.')
        return 1
    return 0


def _models_import(args: argparse.Namespace) -> int:
    from edalle.presets import data_dir_from_env
    from edalle.weights import import_dir

    report = import_dir(args.directory, args.preset, data_dir_from_env(args.data_dir))
    for path in report.copied:
        print(f'imported {path}')
    if report.missing:
        listed = ', '.join(str(p) for p in report.missing)
        print(f'still missing for {args.preset}: {listed}', file=sys.stderr)
        return 1
    print(f'{args.preset}: complete.')
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from edalle.presets import PRESETS, data_dir_from_env, models_dir

    root = models_dir(data_dir_from_env(args.data_dir))
    for preset in PRESETS.values():
        missing = preset.missing_files(root)
        state = (
            'generated on first use'
            if preset.generated and missing
            else ('ready' if not missing else f'{len(missing)} file(s) missing')
        )
        print(f'{preset.name:5} {state:24} {preset.description}')
    return 0


# --------------------------------------------------------------------------- worker and bot


def _add_worker_parser(commands: Any) -> None:
    from edalle.worker.main import add_worker_arguments

    worker = commands.add_parser('worker', help='run the GPU worker: claim jobs from the queue and run them')
    add_worker_arguments(worker)
    worker.set_defaults(handler=_run_worker)


def _run_worker(args: argparse.Namespace) -> int:
    from edalle.worker.main import run_worker

    return int(run_worker(args) or 0)


def _add_bot_parser(commands: Any) -> None:
    from bot.launcher import add_bot_arguments

    bot = commands.add_parser('bot', help='run the Discord bot (and a supervised worker)')
    add_bot_arguments(bot)
    bot.set_defaults(handler=_run_bot)


def _run_bot(args: argparse.Namespace) -> int:
    from bot.launcher import run_bot

    return int(run_bot(args) or 0)


if __name__ == '__main__':
    sys.exit(main())
