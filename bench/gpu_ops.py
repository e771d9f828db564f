"""Whole runs of the picture operations on one device: a 16:9 expand, a zoom 2×, a dream and a ×4 upscale.

Each operation is timed as one whole call of the entry point its runner uses (`expander.api.run`
with a `CanvasRequest`, as `Engine.run_canvas` calls it; `Upscaler.upscale`, as `Engine.upscale`
calls it), at the published sizes with random weights (the f16-16384 VQGAN, CLIP ViT-B-32 and
Real-ESRGAN x4plus's RRDBNet; compute and memory do not depend on weight values), or the tiny
models with `--scale tiny` (the script's own test). The source is a generated 256×256 candidate
(random codes through the VQGAN, with its token grid, as the bot hands a candidate over).

    python bench/gpu_ops.py --device cuda                     # published sizes, default steps
    python bench/gpu_ops.py --device cpu --scale tiny --steps 3 --json ops.json

How it measures. Before each timed run the same operation runs once with 2 steps (a 64² picture for
the upscale): CUDA's context, cuDNN's algorithm search and the allocator's first blocks are paid
there, so the timed figure is what a warm worker spends; the warm-up's time is reported too. On
CUDA the clock stops after a synchronize. Peak memory per run: `torch.cuda.max_memory_allocated`
on CUDA (reset before the run) and Linux's VmHWM (reset through /proc/self/clear_refs) for the
host; so "peak GB" is the run's own high-water mark with the models already loaded.

Targets (issue 22): a 16:9 expand at defaults in ≤ 20 s on one H100.

Prints one line per operation and, with `--json`, writes every figure to that file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# ----------------------------------------------------------------------------- config
PROMPT = 'a painting of rolling farmland'  # bench/expansion.py's prompt
DREAM_PROMPT = 'a lighthouse in a storm, oil painting'
SEED = 0
DREAM_STEPS = 100  # the dream; the expand and the zoom run at the default method's steps
WARM_UP_STEPS = 2
UPSCALE_SIDE = 256  # a candidate, ×4 → 1024²
TARGET_EXPAND_S = 20.0
# -----------------------------------------------------------------------------


def _status_gb(field: str) -> float:
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _reset_peaks(device: str) -> None:
    import torch

    try:
        Path('/proc/self/clear_refs').write_text('5')  # VmHWM back to the current RSS
    except OSError:
        pass
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def timed(device: str, run: Callable[[], Any]) -> tuple[float, dict[str, float]]:
    """Seconds of one call of `run` (synchronised on CUDA) and its peak memory."""
    import torch

    _reset_peaks(device)
    started = time.perf_counter()
    run()
    if device == 'cuda':
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peaks = {'host_peak_gb': _status_gb('VmHWM')}
    if device == 'cuda':
        peaks['gpu_peak_gb'] = torch.cuda.max_memory_allocated() / 2**30
    return seconds, peaks


def canvas_cases(models: Any, steps: int | None, dream_steps: int) -> dict[str, Any]:
    """name → (canvas request of the whole run, of the warm-up): the canvases the operations build at defaults."""
    from dataclasses import replace

    from edalle.expander.api import CanvasRequest
    from edalle.expander.canvas import canvas_for_dream, canvas_for_ratio, canvas_for_zoom

    square = (models.source.width, models.source.height)
    source = dict(source_image=models.source, source_tokens=models.tokens, prompt=PROMPT, seed=SEED)
    cases = {
        'expand 16:9': CanvasRequest(canvas_for_ratio(square, '16:9'), steps=steps, **source),
        'zoom 2x': CanvasRequest(canvas_for_zoom(square, 2.0), steps=steps, **source),
        'dream 1:1': CanvasRequest(canvas_for_dream('1:1'), prompt=DREAM_PROMPT, seed=SEED, steps=dream_steps),
    }
    return {name: (request, replace(request, steps=WARM_UP_STEPS)) for name, request in cases.items()}


def run_all(device: str, scale: str, steps: int | None, dream_steps: int, upscale_side: int) -> dict[str, Any]:
    import numpy as np
    import torch
    from PIL import Image

    from edalle.expander.api import run as run_canvas
    from edalle.models.upscaler import REALESRGAN_X4PLUS, TINY_RRDBNET, load_upscaler, write_rrdbnet_weights

    sys.path.insert(0, str(REPO / 'bench'))
    from expansion import build_models  # the same random-weight models and candidate as bench/expansion.py

    started = time.perf_counter()
    models = build_models(scale, device)
    models.vqgan.eval()
    load_s = time.perf_counter() - started
    out: dict[str, Any] = {'device': device, 'scale': scale, 'models_load_s': load_s, 'runs': {}}
    for name, (request, warm_up) in canvas_cases(models, steps, dream_steps).items():
        first_s, _ = timed(device, lambda r=warm_up: run_canvas(models.vqgan, models.clip, r))
        seconds, peaks = timed(device, lambda r=request: run_canvas(models.vqgan, models.clip, r))
        canvas = request.canvas
        steps_run = request.steps or 100  # DefaultSettings().steps
        out['runs'][name] = {
            'seconds': seconds,
            'warm_up_s': first_s,
            'steps': steps_run,
            'per_step_s': seconds / steps_run,
            'size': f'{canvas.width}x{canvas.height}',
            **peaks,
        }
        print(line(name, out['runs'][name]), flush=True)

    import tempfile

    size = TINY_RRDBNET if scale == 'tiny' else REALESRGAN_X4PLUS
    with tempfile.TemporaryDirectory() as scratch:
        weights = Path(scratch) / 'RealESRGAN_x4plus.pth'
        write_rrdbnet_weights(weights, size, SEED)
        upscaler = load_upscaler(weights, device)
    coarse = np.random.default_rng(SEED).integers(0, 256, (upscale_side // 8, upscale_side // 8, 3), dtype=np.uint8)
    picture = Image.fromarray(coarse).resize((upscale_side, upscale_side), Image.BICUBIC)
    first_s, _ = timed(device, lambda: upscaler.upscale(picture.resize((64, 64))))
    result: list[Image.Image] = []
    seconds, peaks = timed(device, lambda: result.append(upscaler.upscale(picture)))
    assert result[0].size == (4 * upscale_side, 4 * upscale_side)
    out['runs']['upscale x4'] = {
        'seconds': seconds,
        'warm_up_s': first_s,
        'size': f'{upscale_side}x{upscale_side} -> {result[0].width}x{result[0].height}',
        'dtype': str(upscaler.dtype).removeprefix('torch.'),
        **peaks,
    }
    print(line('upscale x4', out['runs']['upscale x4']), flush=True)
    if device == 'cuda':
        out['gpu'] = torch.cuda.get_device_name()
    return out


def line(name: str, run: dict[str, Any]) -> str:
    """One operation's figures as one line: `<name>: <seconds> s (…)`, which gpu_check.sh's summary collects."""
    steps = f', {run["steps"]} steps, {run["per_step_s"]:.3f} s/step' if 'steps' in run else ''
    gpu = f', GPU peak {run["gpu_peak_gb"]:.2f} GB' if 'gpu_peak_gb' in run else ''
    verdict = ''
    if name == 'expand 16:9' and run.get('steps') == 100:
        verdict = f' (target <= {TARGET_EXPAND_S:g} s: {"PASS" if run["seconds"] <= TARGET_EXPAND_S else "FAIL"})'
    return (
        f'{name}: {run["seconds"]:.2f} s ({run["size"]}{steps}; warm-up {run["warm_up_s"]:.2f} s; '
        f'host peak {run["host_peak_gb"]:.2f} GB{gpu}){verdict}'
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--scale', default='real', choices=['real', 'tiny'], help='tiny: the test models (for the test)')
    parser.add_argument('--steps', type=int, default=None, help="expand and zoom steps (default: the method's, 100)")
    parser.add_argument('--dream-steps', type=int, default=DREAM_STEPS)
    parser.add_argument('--upscale-side', type=int, default=UPSCALE_SIDE, help='side of the square picture upscaled')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch decides)')
    parser.add_argument('--json', type=Path, help='write every figure here')
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # on a shared 2-core CPU, one thread spares OpenMP's barrier stalls
    if args.device == 'cuda':
        import torch

        if not torch.cuda.is_available():
            sys.exit('--device cuda: torch sees no CUDA device')
    load = os.getloadavg()
    print(f'# operations, {args.scale} models, {args.device}; {platform.platform()}, Python {platform.python_version()}')
    print(f'# load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}', flush=True)
    result = run_all(args.device, args.scale, args.steps, args.dream_steps, args.upscale_side)
    result['load_average'] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
