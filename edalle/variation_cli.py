"""`edalle vary` and `edalle repaint`: a candidate's variations, and a region of a picture redrawn.

    edalle vary MANIFEST [--index I] [--strength subtle|strong] [--prompt TEXT] [-n N] [--seed S] --out DIR
    edalle repaint SOURCE --region B2:C3 --prompt TEXT [--method tokens|clip] [--steps N] [--init edit|remove] --out FILE
                   [--timelapse FILE.gif]   (clip only: the run as an animation, as `expand` writes it)

A vary needs an imagine (or vary) manifest: it keeps the candidate's token rows, which only a manifest records. A
repaint takes a manifest's candidate or a picture file; by tokens it needs 256×256 (a file is encoded by the VQGAN),
by CLIP any size. Everything typed is checked before any model loads, with the sentence a Discord member would read.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from edalle.operations.base import RequestError


def add_variation_parsers(commands: Any, handler: Any, subcommand: Any, preset_option: Any) -> None:
    """Mount `vary` and `repaint` on the `edalle` parser; `handler(args)` runs them. `subcommand` and
    `preset_option` are the CLI's own builders (global options on every subcommand, `--preset` read from `.env`)."""
    from edalle.presets import PRESETS

    vary = subcommand(commands, 'vary', help='redraw the lower part of a candidate, keeping its top token rows')
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
    preset_option(vary, PRESETS, 'models to use')
    vary.add_argument('--dtype', choices=('float32', 'bfloat16', 'float16'), default=None, help='DalleBart compute type')
    vary.add_argument('--out', type=Path, required=True, help='output directory')
    vary.set_defaults(handler=handler, operation='vary')

    repaint = subcommand(commands, 'repaint', help='redraw cells of a picture (A1–D4 on 256×256) under a new prompt')
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
    repaint.add_argument('--seed', type=int, default=None, help='sampling or optimisation seed (default: random, printed)')
    preset_option(repaint, PRESETS, 'models to use')
    repaint.add_argument('--out', type=Path, required=True, help='output PNG (or .webp, .jpg) file')
    repaint.add_argument('--timelapse', type=Path, default=None, help='clip: also write the time-lapse (.gif or .webp)')
    repaint.add_argument(
        '--timelapse-bytes', type=int, default=10 * 2**20, help='the most the time-lapse may weigh (default 10 MiB)'
    )
    repaint.set_defaults(handler=handler, operation='repaint')


def run_variation_command(args: argparse.Namespace, bars_cls: Any) -> int:
    """`args.preset` is resolved already (the CLI's `preset_of`)."""
    return run_vary(args, bars_cls) if args.operation == 'vary' else run_repaint(args, bars_cls)


def run_vary(args: argparse.Namespace, bars_cls: Any) -> int:
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
        knobs=manifest_knobs(args.manifest),
    )
    validate(request)  # fail before loading models
    engine = Engine.load(args.preset, args.data_dir, dtype=args.dtype)
    with bars_cls() as bars:
        (result,) = vary(engine, [request], progress=bars.update)
    origin = {'manifest': str(args.manifest), 'index': args.index}
    write_vary_result(result, args.out, extra={'preset': args.preset, 'n': args.n, 'source': origin})
    best = result.candidates[0]
    print(
        f'{args.out}: {len(result.candidates)} variations ({args.strength}), best score {best.score:.2f} (seed {best.seed})'
    )
    return 0


def manifest_knobs(manifest: Path) -> Any:
    """The knobs a manifest's candidates were drawn with (the defaults for manifests written before knobs)."""
    from edalle.operations.imagine import Knobs

    path = manifest / 'manifest.json' if manifest.is_dir() else manifest
    knobs = json.loads(path.read_text()).get('knobs')
    return Knobs.of(knobs) if isinstance(knobs, dict) else Knobs()


def run_repaint(args: argparse.Namespace, bars_cls: Any) -> int:
    from edalle.expander.cli import OUTPUT_SUFFIXES, _save
    from edalle.expander.sources import is_manifest, load_source

    if args.out.suffix.lower() not in OUTPUT_SUFFIXES or args.out.is_dir():
        raise RequestError(f'--out must be a file ending in .png, .webp or .jpg (got {args.out}).')
    if args.timelapse is not None and args.method != 'clip':
        raise RequestError('A repaint by tokens is not an optimisation and has no time-lapse: add --method clip.')
    source = load_source(args.source, args.index, keep_aspect=True)  # a picture file keeps its own shape
    knobs = manifest_knobs(args.source) if is_manifest(args.source) else None
    if args.method == 'tokens':
        image, seconds, note = _repaint_tokens(args, bars_cls, source, knobs)
    else:
        image, seconds, note = _repaint_clip(args, bars_cls, source)
    _save(image, args.out)
    print(f'{args.out}: {args.region.strip().upper()} repainted by {args.method} ({note}, {seconds:.1f} s)')
    return 0


def _repaint_tokens(args: argparse.Namespace, bars_cls: Any, source: Any, knobs: Any) -> tuple[Any, float, str]:
    import numpy as np

    from edalle.engine import Engine
    from edalle.operations.imagine import Knobs
    from edalle.operations.repaint import CLIP_INSTEAD, RepaintRequest, repaint, validate
    from edalle.operations.token_grid import GRID_SIDE, tokens_of

    if source.image.size != (256, 256):
        width, height = source.image.size
        raise RequestError(
            f'Repainting by tokens needs a 256×256 picture; {source.origin} is {width}×{height}.{CLIP_INSTEAD}'
        )
    placeholder = np.zeros((GRID_SIDE, GRID_SIDE), np.int32) if source.tokens is None else source.tokens
    request = RepaintRequest(placeholder, source.image, args.region, args.prompt, seed=args.seed, knobs=knobs or Knobs())
    validate(request)  # fail before loading models
    engine = Engine.load(args.preset, args.data_dir)
    if source.tokens is None:  # a picture file: its tokens are the VQGAN's encoding of it
        request = replace(request, tokens=tokens_of(engine, None, source.image))
    started = time.perf_counter()
    with bars_cls() as bars:
        (result,) = repaint(engine, [request], progress=bars.update)
    best = result.samples[0]
    note = f'best of {len(result.samples)}, score {best.score:.2f}, seed {best.seed}'
    return result.image, time.perf_counter() - started, note


def _repaint_clip(args: argparse.Namespace, bars_cls: Any, source: Any) -> tuple[Any, float, str]:
    from edalle.expander.api import CanvasRequest, prepare_canvas, run
    from edalle.expander.canvas import canvas_for_region
    from edalle.expander.cli import _preset, check_timelapse, load_models, write_timelapse_file
    from edalle.operations.optimising import DEFAULT_STEPS, record_every

    timelapse = check_timelapse(args.timelapse, args.out)
    request = CanvasRequest(
        canvas=canvas_for_region(source.image.size, args.region),
        source_image=source.image,
        source_tokens=source.tokens,
        prompt=args.prompt,
        steps=args.steps,
        seed=args.seed,
        init=args.init,
        record_every=record_every(args.steps or DEFAULT_STEPS) if timelapse is not None else 0,
    )
    request = replace(request, seed=prepare_canvas(request).seed)  # fail before loading models; the seed is printed
    vqgan, clip = load_models(_preset(args.preset), args.data_dir)
    started = time.perf_counter()
    with bars_cls() as bars:
        result = run(vqgan, clip, request, progress=bars.update)
    seconds = time.perf_counter() - started
    written = ''
    if timelapse is not None:
        written = write_timelapse_file([frame.image for frame in result.frames], timelapse, args.timelapse_bytes)
    return result.image, seconds, f'{result.settings["steps"]} steps, seed {result.seed}{written}'
