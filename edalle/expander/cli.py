"""`edalle expand SRC --ratio 16:9 [--prompt TEXT] [--steps N] [--method default|classic] [--seed S] [--out FILE]
[--timelapse FILE.gif]`, and the output checks and time-lapse writing every canvas command shares (`edalle.canvas_cli`).

Everything the user typed (ratio, source file, steps, seed, output name) is checked before
any model loads, so mistakes fail in a second with a message that says what to change.
Only the VQGAN and CLIP of the preset are loaded; the DalleBart is not needed to expand.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from edalle.expander.errors import ExpandError

OUTPUT_SUFFIXES = {'.png', '.webp', '.jpg', '.jpeg'}
TIMELAPSE_SUFFIXES = {'.gif': 'gif', '.webp': 'webp'}


def run_expand(args: argparse.Namespace, bars_cls: Any) -> int:
    """The `expand` subcommand. `bars_cls()` is a context manager with `.update(stage, done, total, preview)`."""
    from edalle.expander.api import ExpandRequest, expand, prepare
    from edalle.expander.sources import load_source
    from edalle.media import frame_interval

    out = check_out(args.out if args.out is not None else default_out(Path(args.source), args.ratio))
    timelapse = check_timelapse(getattr(args, 'timelapse', None), out)
    source = load_source(Path(args.source), args.index, keep_aspect=True)  # a picture file keeps its own shape
    prompt = args.prompt if args.prompt is not None else (source.prompt or '')
    preset = _preset(args.preset)
    tokens = source.tokens
    if tokens is not None and source.preset is not None and not _same_vqgan(source.preset, preset):
        print(f'note: {source.origin} was drawn by the {source.preset!r} models; re-encoding its pixels.', file=sys.stderr)
        tokens = None
    request = ExpandRequest(
        source_image=source.image,
        prompt=prompt,
        ratio=args.ratio,
        source_tokens=tokens,
        steps=args.steps,
        seed=args.seed,
        method=args.method,
        record_every=frame_interval(args.steps or 100) if timelapse is not None else 0,
    )
    prepared = prepare(request)  # fail before loading models
    request = replace(request, seed=prepared.seed)  # printed, so the run can be repeated
    if not prompt.strip():
        print('note: no prompt; the picture alone guides the new sides (give --prompt to steer them).', file=sys.stderr)

    started = time.perf_counter()
    with bars_cls() as bars:
        vqgan, clip = load_models(preset, args.data_dir, progress=bars.update)
    load_seconds = time.perf_counter() - started
    with bars_cls() as bars:
        result = expand(vqgan, clip, request, progress=bars.update)
    _save(result.image, out)
    written = ''
    if timelapse is not None:
        written = write_timelapse_file([frame.image for frame in result.frames], timelapse, args.timelapse_bytes)
    seconds = result.timings.get('expand', 0.0)
    print(
        f'{out}: {result.width}×{result.height} ({result.settings["method"]}, {result.settings["steps"]} steps, '
        f'seed {result.seed}, {seconds:.1f} s + {load_seconds:.1f} s loading){written}'
    )
    return 0


def default_out(source: Path, ratio: str) -> Path:
    """Like `imagine`'s: `out/<time>-<source name>-<W>x<H>.png`, so a run never overwrites an earlier one."""
    stem = source.parent.name if source.name == 'manifest.json' else source.stem
    shape = re.sub(r'[^0-9]+', 'x', ratio.strip()).strip('x') or 'ratio'
    return Path('out') / f'{time.strftime("%Y%m%d-%H%M%S")}-{stem or "source"}-{shape}.png'


def check_out(out: Path) -> Path:
    """`--out` as a path, refused unless it names a PNG, WebP or JPEG file."""
    out = Path(out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ExpandError(f'--out must end in .png, .webp or .jpg (got {out.name!r}).')
    if out.is_dir():
        raise ExpandError(f'--out {out} is a directory; give a file name such as {out / "picture.png"}.')
    return out


def check_timelapse(path: Path | None, out: Path) -> Path | None:
    """`--timelapse` as a path (None: not asked for), refused unless it names a GIF or WebP file other than `--out`."""
    if path is None:
        return None
    path = Path(path)
    if path.suffix.lower() not in TIMELAPSE_SUFFIXES:
        raise ExpandError(f'--timelapse must end in .gif or .webp (got {path.name!r}).')
    if path.resolve() == Path(out).resolve():
        raise ExpandError('--timelapse and --out name the same file; give the time-lapse a name of its own.')
    return path


def write_timelapse_file(frames: list[Any], path: Path, limit_bytes: int) -> str:
    """Write the frames as an animation in `path`'s format under `limit_bytes`; the words for the summary line."""
    from edalle.media import MediaTooLarge, write_timelapse
    from edalle.outputs import write_atomic

    if len(frames) < 2:
        raise ExpandError('The run kept fewer than two frames; there is no time-lapse to write.')
    try:
        animation = write_timelapse(frames, limit_bytes, formats=(TIMELAPSE_SUFFIXES[path.suffix.lower()],))
    except MediaTooLarge as exc:
        raise ExpandError(f'{exc} Give --timelapse-bytes more room (the picture itself is written).') from None
    write_atomic(path, animation.data)
    note = f'; {animation.note}' if animation.note else ''
    return f'\n{path}: time-lapse, {animation.frame_count} frames, {len(animation.data) / 2**20:.1f} MiB{note}'


def _preset(name: str) -> Any:
    from edalle.presets import get_preset

    try:
        return get_preset(name)
    except ValueError as exc:
        raise ExpandError(str(exc)) from None


def _same_vqgan(source_preset: str, preset: Any) -> bool:
    from edalle.presets import PRESETS

    other = PRESETS.get(source_preset)
    return other is not None and other.vqgan == preset.vqgan and other.vqgan_files == preset.vqgan_files


def load_models(preset: Any, data_dir: str | Path | None, progress: Any = None) -> tuple[Any, Any]:
    """The preset's VQGAN and CLIP on the best device (the tiny preset is generated on first use).

    `progress(stage, done, total, preview)` hears ('load', done, 2) as each model is ready."""
    import torch

    from edalle.loading import load_clip, load_vqgan_for
    from edalle.presets import data_dir_from_env, models_dir
    from edalle.weights import MissingWeights, ensure_tiny

    root = data_dir_from_env(data_dir)
    if preset.generated:
        ensure_tiny(root)
    components = (preset.vqgan_files, preset.clip_files)
    missing = [p for c in components for p in c.required_paths(models_dir(root)) if not p.is_file()]
    if missing:
        raise MissingWeights(preset, missing)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    step = progress or (lambda stage, done, total, preview=None: None)
    step('load', 0, 2, None)
    vqgan = load_vqgan_for(preset, root, device)
    step('load', 1, 2, None)
    clip = load_clip(preset, root, device)
    step('load', 2, 2, None)
    return vqgan, clip


def _save(image: Any, out: Path) -> None:
    import io

    from edalle.outputs import write_atomic

    buffer = io.BytesIO()
    suffix = out.suffix.lower()
    options: dict[str, Any] = {} if suffix == '.png' else {'quality': 95}
    image.save(buffer, format={'.png': 'PNG', '.webp': 'WEBP'}.get(suffix, 'JPEG'), **options)
    write_atomic(out, buffer.getvalue())
