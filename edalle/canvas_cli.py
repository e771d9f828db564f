"""`edalle zoom`, `pan`, `square`, `dream` and `upscale`, and the `--timelapse` every optimising command writes.

    edalle zoom SOURCE [--index I] [--factor 1.5|2] [--prompt TEXT] [--steps N] [--seed S] --out FILE [--timelapse F.gif]
    edalle pan SOURCE --direction left|right|up|down [...]       edalle square SOURCE [...]
    edalle dream PROMPT [--ratio 16:9] [--init random|grey|noise] [--no TEXT] [--refine SOURCE] [...]
    edalle upscale SOURCE [--index I] --out FILE

SOURCE is an imagine manifest (or its directory) with `--index` (1 = best), or a picture file. The canvas commands
fit a file to the expander's sources (its own shape, short side 256 px, whole tokens) and build their canvas with
the same rules as the bot (`edalle.operations.zoom`, `pan`, `square`, `dream`); an upscale takes a file at its own
size, up to `--max-pixels`. Everything typed is checked before any model loads, so a mistake fails in a second
with the sentence a Discord member would read. The time-lapse is an animated GIF (or WebP, by its name) of a frame
every ⌈steps / 80⌉ steps, under `--timelapse-bytes` (10 MiB, Discord's upload limit on a server without boosts).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from edalle.expander.errors import ExpandError


def add_canvas_parsers(commands: Any, handler: Any, subcommand: Any, preset_option: Any) -> None:
    """Mount `zoom`, `pan`, `square` and `dream` on the `edalle` parser; `handler(args)` runs them. `subcommand` and
    `preset_option` are the CLI's own builders (global options on every subcommand, `--preset` read from `.env`)."""
    from edalle.operations import dream, pan, zoom
    from edalle.presets import PRESETS

    def common(parser: argparse.ArgumentParser, *, source: bool = True) -> None:
        if source:
            parser.add_argument('source', type=Path, help='an imagine manifest.json (or its directory) or an image file')
            parser.add_argument('--index', type=int, default=1, help='which candidate of a manifest, 1 = best (default 1)')
            parser.add_argument('--prompt', default=None, help='guidance text (default: the source job prompt)')
        parser.add_argument('--steps', type=int, default=None, help='optimisation steps (default 100)')
        parser.add_argument('--seed', type=int, default=None, help='optimisation seed (default: random, printed)')
        preset_option(parser, PRESETS, 'models to use (its VQGAN and CLIP)')
        parser.add_argument('--max-canvas-px', type=int, default=1024, help='the longest side allowed (default 1024)')
        parser.add_argument('--out', type=Path, required=True, help='output PNG (or .webp, .jpg) file')
        parser.add_argument('--timelapse', type=Path, default=None, help='also write the time-lapse (.gif or .webp)')
        parser.add_argument(
            '--timelapse-bytes', type=int, default=10 * 2**20, help='the most the time-lapse may weigh (default 10 MiB)'
        )

    parser = subcommand(commands, 'zoom', help='zoom out of a picture: new content all around it')
    common(parser)
    parser.add_argument('--factor', type=float, default=2.0, choices=zoom.FACTORS, help='1.5 or 2 (default 2)')
    parser.set_defaults(handler=handler, operation='zoom')

    parser = subcommand(commands, 'pan', help='grow a picture on one side by half its short side')
    common(parser)
    parser.add_argument('--direction', required=True, choices=pan.DIRECTIONS, help='the side that grows')
    parser.set_defaults(handler=handler, operation='pan')

    parser = subcommand(commands, 'square', help='make a widened picture square again')
    common(parser)
    parser.set_defaults(handler=handler, operation='square')

    parser = subcommand(commands, 'dream', help='VQGAN+CLIP from a prompt alone (or refine a picture)')
    parser.add_argument('prompt', help='what to draw, in English, e.g. "a red fox in the snow, oil painting"')
    common(parser, source=False)
    parser.add_argument('--ratio', default=None, help='from 1:3 to 3:1 (default 1:1)')
    parser.add_argument('--init', default=None, choices=dream.INITS, help='how to start (default random)')
    parser.add_argument('--no', dest='negative', default=None, help='what to keep out (a negative prompt)')
    parser.add_argument('--refine', type=Path, default=None, help='start from this picture (a manifest or a file)')
    parser.add_argument('--index', type=int, default=1, help='which candidate of a --refine manifest (default 1)')
    parser.set_defaults(handler=handler, operation='dream')


def run_canvas_command(args: argparse.Namespace, bars_cls: Any) -> int:
    """A canvas command: check everything, load the VQGAN and CLIP, run with a progress bar, write the files."""
    from edalle.expander import cli as expand_cli
    from edalle.expander.api import CanvasRequest, prepare_canvas, run
    from edalle.expander.cli import check_out, check_timelapse, write_timelapse_file
    from edalle.operations import get
    from edalle.operations.optimising import DEFAULT_STEPS, record_every

    operation: Any = get(args.operation)
    dreaming = args.operation == 'dream'
    out = check_out(args.out)
    timelapse = check_timelapse(args.timelapse, out)
    preset = expand_cli._preset(args.preset or os.environ.get('EDALLE_PRESET') or 'mini')
    source_path = getattr(args, 'refine', None) if dreaming else args.source
    payload: dict[str, Any] = {
        'steps': args.steps,
        'seed': args.seed,
        **command_fields(args, refine=source_path is not None),
    }
    image, tokens, prompt = None, None, args.prompt or ''
    if source_path is not None:
        source = load_canvas_source(Path(source_path), args.index, args.max_canvas_px)
        image, tokens = source.image, source.tokens
        if tokens is not None and source.preset is not None and not expand_cli._same_vqgan(source.preset, preset):
            print(
                f'note: {source.origin} was drawn by the {source.preset!r} models; re-encoding its pixels.', file=sys.stderr
            )
            tokens = None
        if not dreaming and args.prompt is None:
            prompt = source.prompt or ''  # the job's prompt by default
    canvas = operation.canvas(payload, image.size if image is not None else None, args.max_canvas_px)
    steps = args.steps or DEFAULT_STEPS
    request = CanvasRequest(
        canvas=canvas,
        source_image=image,
        source_tokens=tokens,
        prompt=prompt,
        negative_prompt=str(getattr(args, 'negative', None) or ''),
        steps=args.steps,
        seed=args.seed,
        init=str(payload.get('init') or 'auto'),
        record_every=record_every(steps) if timelapse is not None else 0,
    )
    prepared = prepare_canvas(request)  # fail before loading models
    if not prompt.strip():
        print('note: no prompt; the picture alone guides the new cells (give --prompt to steer them).', file=sys.stderr)

    started = time.perf_counter()
    vqgan, clip = expand_cli.load_models(preset, args.data_dir)
    load_seconds = time.perf_counter() - started
    with bars_cls() as bars:
        result = run(vqgan, clip, replace(request, seed=prepared.seed), progress=bars.update)  # the seed is printed
    expand_cli._save(result.image, out)
    written = ''
    if timelapse is not None:
        written = write_timelapse_file([frame.image for frame in result.frames], timelapse, args.timelapse_bytes)
    seconds = result.timings.get(canvas.stage, 0.0)
    print(
        f'{out}: {result.width}×{result.height} ({canvas.kind} {canvas.label}, {result.settings["steps"]} steps, '
        f'seed {result.seed}, {seconds:.1f} s + {load_seconds:.1f} s loading){written}'
    )
    return 0


def load_canvas_source(path: Path, index: int, max_canvas_px: int) -> Any:
    """A manifest's candidate (with its tokens and prompt), or a picture file: one in whole 16-px tokens within the
    limit as it is (a result of these commands, so they chain: a zoom of a zoom grows), any other fitted keeping its
    shape (short side 256 px, `sources.fit_picture`)."""
    from edalle.expander.sources import (
        TOKEN_PX,
        Source,
        _check_bytes,
        fit_picture,
        is_manifest,
        load_candidate,
        open_image_bytes,
    )

    if is_manifest(path):
        return load_candidate(path, index)
    if not path.is_file():
        raise ExpandError(f'No picture file at {path}.')
    _check_bytes(path.stat().st_size, path.name)
    image = open_image_bytes(path.read_bytes(), path.name)
    whole = image.width % TOKEN_PX == 0 and image.height % TOKEN_PX == 0 and max(image.size) <= max_canvas_px
    return Source(image if whole else fit_picture(image, max_long_px=max_canvas_px), None, None, None, path.name)


def command_fields(args: argparse.Namespace, *, refine: bool) -> Mapping[str, Any]:
    """The request fields of each command, as the bot's requests carry them."""
    if args.operation == 'zoom':
        return {'factor': args.factor}
    if args.operation == 'pan':
        return {'direction': args.direction}
    if args.operation == 'dream':
        if refine and (args.ratio or args.init):
            raise ExpandError('A dream from a picture keeps its shape and starts from it: leave out --ratio and --init.')
        return {'ratio': args.ratio, 'init': 'refine' if refine else args.init}
    return {}


# ---- upscale ----------------------------------------------------------------------------------------------


def add_upscale_parser(commands: Any, handler: Any, subcommand: Any, preset_option: Any) -> None:
    from edalle.presets import PRESETS
    from edalle.upscale import DEFAULT_MAX_INPUT_PIXELS, SCALE

    parser = subcommand(commands, 'upscale', help=f'a picture ×{SCALE} with a super-resolution network')
    parser.add_argument('source', type=Path, help='an imagine manifest.json (or its directory) or an image file')
    parser.add_argument('--index', type=int, default=1, help='which candidate of a manifest, 1 = best (default 1)')
    preset_option(parser, PRESETS, 'whose upscaler: mini and mega share the upscale add-on; tiny has its own')
    parser.add_argument(
        '--max-pixels', type=int, default=DEFAULT_MAX_INPUT_PIXELS, help='the largest input, width × height (default 512²)'
    )
    parser.add_argument('--out', type=Path, required=True, help='output PNG (or .webp, .jpg) file')
    parser.set_defaults(handler=handler)


def run_upscale_command(args: argparse.Namespace, bars_cls: Any) -> int:
    """Upscale a candidate or a picture file kept at its own size; over `--max-pixels` it is refused naming the largest."""
    import torch

    from edalle.expander import cli as expand_cli
    from edalle.expander.cli import check_out
    from edalle.expander.sources import is_manifest, load_candidate, open_image_file
    from edalle.presets import data_dir_from_env
    from edalle.upscale import SCALE, check_input_size, load_upscaler_for, upscale_installed

    out = check_out(args.out)
    source = Path(args.source)
    image = load_candidate(source, args.index).image if is_manifest(source) else open_image_file(source)
    check_input_size(image.width, image.height, args.max_pixels)
    args.preset = args.preset or os.environ.get('EDALLE_PRESET') or 'mini'
    expand_cli._preset(args.preset)
    data_dir = data_dir_from_env(args.data_dir)
    if not upscale_installed(data_dir, args.preset):
        from edalle.operations.upscale import NOT_INSTALLED

        raise ExpandError(NOT_INSTALLED)
    started = time.perf_counter()
    upscaler = load_upscaler_for(args.preset, data_dir, 'cuda' if torch.cuda.is_available() else 'cpu')
    with bars_cls() as bars:
        result = upscaler.upscale(image, progress=lambda done, total: bars.update('upscale', done, total))
    expand_cli._save(result, out)
    seconds = time.perf_counter() - started
    print(f'{out}: {result.width}×{result.height} (×{SCALE} of {image.width}×{image.height}, {seconds:.1f} s)')
    return 0
