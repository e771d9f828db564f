"""Expansion speed: the default method against `classic` (the faithful E-DALL-E recipe), in one run.

Both methods get the published sizes with random weights (compute does not depend on weight
values): the f16-16384 VQGAN and CLIP ViT-B-32, a 256×256 generated candidate (random tokens
through the VQGAN, so the default method gets its token grid as the bot gives it), ratio 16:9.

    python bench/expansion.py                    # CPU: a few timed steps per run, scaled
    python bench/expansion.py --profile          # also: where a step's time goes
    python bench/expansion.py --device cuda      # whole expansions at each method's defaults

Targets (issue 7): (a) at equal steps and cutouts (64), default's time per step ≤ 0.5 × classic's;
(b) at each method's defaults (default 100 steps × 32 views, classic 200 × 64), default's time per
expansion ≤ 0.33 × classic's, with the safeguards on: the default output's centre is the source,
bit for bit, and every canvas column is seen by CLIP about equally often.

How it measures. Each run is a real `run_classic` / `run_default` call; an observer stamps the
wall clock and the process CPU clock after every step, so a step's time is the gap between two
stamps. The first stamp also carries the setup (encode, text and image-prompt embeddings) and the
first step's warm-up; setup = the earliest first stamp over the rounds − one median step (the
very first run also pays lazy imports and first allocations); the final decode is the time after
the last stamp. Runs of the variants alternate (A B C D A B C D …), so other load on a shared
machine hits all of them alike, and each figure is the median over all timed steps of all rounds
(minimum also shown). On the CPU torch gets THREADS threads (default 1): with two threads on a
2-core box that other processes share, OpenMP barriers stall whenever one thread is descheduled
and its spinning counts as CPU time, so both clocks get noisier; one thread keeps CPU time ≈ the
work done and wall ≈ CPU time when the machine is quiet. Both clocks are reported.
On CUDA (`--device cuda`) whole expansions are timed (steps at the methods' defaults), with a
synchronize before every stamp.

Peak memory per run: Linux's VmHWM, reset before each run (`/proc/self/clear_refs`), on CPU;
`torch.cuda.max_memory_allocated` on CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edalle.config import VQGAN_CONFIGS  # noqa: E402
from edalle.expander.canvas import (  # noqa: E402
    Canvas,
    canvas_for_dream,
    canvas_for_pan,
    canvas_for_ratio,
    canvas_for_zoom,
    canvas_from_geometry,
)
from edalle.expander.classic import ClassicSettings, run_classic  # noqa: E402
from edalle.expander.cost import StepSample, estimate_step_seconds, fit_step_costs  # noqa: E402
from edalle.expander.cutouts import ClassicCutouts, EvenCutouts, coverage  # noqa: E402
from edalle.expander.default import (  # noqa: E402
    CanvasItem,
    DefaultItem,
    DefaultSettings,
    _cosine,
    bf16_autocast,
    native_bf16_cpu,
    run_canvas,
    run_default,
    views_needing_grad,
)
from edalle.expander.frames import FrameRecorder  # noqa: E402
from edalle.expander.geometry import Geometry, compute_geometry  # noqa: E402
from edalle.expander.images import to_images  # noqa: E402
from edalle.expander.seams import moving_pixels  # noqa: E402
from edalle.models.clip import ClipModel  # noqa: E402
from edalle.models.vqgan import VQGAN  # noqa: E402

# ----------------------------------------------------------------------------- config
RATIO = '16:9'
PROMPT = 'a painting of rolling farmland'  # the original notebook's default
SEED = 0
EQUAL_CUTN = 64  # (a): both methods at the original's 64 views per step
TIMED_STEPS = 2  # CPU: timed steps per run, after the first (which carries the setup)
TIMED_STEPS_CUDA = 20  # CUDA: per-step runs at equal cutouts
ROUNDS = 2  # A B C D rounds
THREADS = 1  # torch threads on the CPU (see the module docstring)
COVERAGE_STEPS = 400  # steps of view boxes drawn for the coverage figures
TARGET_PER_STEP = 0.5
TARGET_PER_EXPANSION = 0.33
# -----------------------------------------------------------------------------


@dataclass
class Variant:
    """One method at one setting; `steps` is what a whole expansion at these settings takes."""

    name: str
    method: str  # 'classic' | 'default'
    settings: ClassicSettings | DefaultSettings
    runs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Models:
    vqgan: VQGAN
    clip: ClipModel
    source: Any  # PIL image, 256×256
    tokens: np.ndarray  # (16, 16)


def build_models(scale: str, device: str) -> Models:
    """Random-weight models at `scale` ('real' or 'tiny') and a generated 256×256 candidate."""
    if scale == 'real':
        vqgan = VQGAN.random(VQGAN_CONFIGS['f16_16384'], SEED)
        clip = ClipModel.build_random('ViT-B-32', SEED, device=device)
    else:
        vqgan = VQGAN.random(VQGAN_CONFIGS['tiny'], SEED)
        clip = ClipModel.build_tiny(SEED, device=device)
    vqgan = vqgan.to(device)
    tokens = np.random.RandomState(SEED).randint(0, vqgan.codebook.shape[0], (16, 16))
    with torch.no_grad():
        source = to_images(vqgan.decode_tokens(torch.as_tensor(tokens, device=device)[None]))[0]
    return Models(vqgan, clip, source, tokens)


# ----------------------------------------------------------------------------- measuring


def _reset_peak_rss() -> None:
    try:
        Path('/proc/self/clear_refs').write_text('5')  # resets VmHWM to the current RSS
    except OSError:
        pass


def _peak_rss_gb() -> float:
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def side_columns(geometry: Geometry) -> torch.Tensor:
    """Token columns (wide) of the two new bands."""
    added, columns = geometry.added_per_side, geometry.tokens[1]
    return torch.cat([torch.arange(added), torch.arange(columns - added, columns)])


def run_once(variant: Variant, models: Models, geometry: Geometry, steps: int, device: str) -> dict[str, Any]:
    """One real expansion of `steps` steps; per-step wall/CPU times, setup, final decode, peak memory, checks."""
    cuda = device == 'cuda'
    stamps: list[tuple[float, float]] = []
    moves: list[float] = []
    previous: list[torch.Tensor] = []
    sides = side_columns(geometry).to(device)

    def observer(step: int, z: torch.Tensor) -> None:
        if cuda:
            torch.cuda.synchronize()
        stamps.append((time.perf_counter(), time.process_time()))
        band = z.detach().index_select(3, sides)
        if previous:
            moves.append(float((band - previous[0]).abs().mean()))  # mean |Δz| per side latent entry
            previous[0] = band.clone()
        else:
            previous.append(band.clone())

    def progress(stage: str, done: int, total: int, preview: object) -> None:
        pass  # the bot takes previews; the methods make them only when asked

    settings = replace(variant.settings, steps=steps)
    _reset_peak_rss()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if variant.method == 'classic':
        out = run_classic(
            models.vqgan, models.clip, models.source, PROMPT, geometry, SEED, settings, progress=progress, observer=observer
        )
    else:
        item = DefaultItem(models.source, models.tokens, PROMPT, SEED)
        out = run_default(models.vqgan, models.clip, [item], geometry, settings, progress=progress, observer=observer)
    if cuda:
        torch.cuda.synchronize()
    wall1, cpu1 = time.perf_counter(), time.process_time()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else _peak_rss_gb()
    walls = [b[0] - a[0] for a, b in zip(stamps, stamps[1:], strict=False)]
    cpus = [b[1] - a[1] for a, b in zip(stamps, stamps[1:], strict=False)]
    result: dict[str, Any] = {
        'steps': steps,
        'step_wall': walls,
        'step_cpu': cpus,
        'first_wall': stamps[0][0] - wall0,  # setup + first step
        'first_cpu': stamps[0][1] - cpu0,
        'final_wall': wall1 - stamps[-1][0],
        'final_cpu': cpu1 - stamps[-1][1],
        'total_wall': wall1 - wall0,
        'total_cpu': cpu1 - cpu0,
        'peak_gb': peak,
        'latent_move': moves,
        'lr': [settings.lr] * steps if variant.method == 'classic' else [_cosine(i, settings) for i in range(steps)],  # type: ignore[arg-type]
    }
    if variant.method == 'default':
        x0, y0, x1, y1 = geometry.source_box
        result['centre_exact'] = bool(np.array_equal(np.asarray(out.images[0])[y0:y1, x0:x1], np.asarray(models.source)))
    return result


def column_coverage(geometry: Geometry, cutn: int, method: str, steps: int) -> dict[str, float]:
    """Fraction of views that contain each canvas column, over `steps` steps of each method's real boxes."""
    width, height = geometry.size
    if method == 'classic':
        cutouts = ClassicCutouts(224, cutn)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            boxes = [box for _ in range(steps) for box in cutouts.boxes(height, width)]
        cover = coverage(boxes, width)
    else:
        views = EvenCutouts(DefaultSettings(cutn=cutn).cutout_settings())
        generator = torch.Generator().manual_seed(SEED)
        cover = coverage(torch.cat([views.boxes(height, width, generator) for _ in range(steps)]), width)
    left, _, right, _ = geometry.source_box
    bands = torch.cat([cover[:left], cover[right:]])
    return {
        'min': float(cover.min()),
        'max': float(cover.max()),
        'band_min': float(bands.min()),
        'band_mean': float(bands.mean()),
        'centre_mean': float(cover[left:right].mean()),
        'outer_column': float(min(cover[0], cover[-1])),
    }


# ----------------------------------------------------------------------------- profile


def _best(fn: Callable[[], object], repeats: int = 2) -> tuple[float, float]:
    """(wall, CPU) seconds of fn, the minimum of `repeats` calls after one warm-up call."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn()
    best = (float('inf'), float('inf'))
    for _ in range(repeats):
        sync()
        w, c = time.perf_counter(), time.process_time()
        fn()
        sync()
        best = (min(best[0], time.perf_counter() - w), min(best[1], time.process_time() - c))
    return best


def profile(models: Models, geometry: Geometry, cutn: int) -> dict[str, Any]:
    """Each component of a step at the real shapes, forward and backward where the step has one."""
    from edalle.expander.decode import decode_windows as decode_canvas_windows
    from edalle.expander.images import to_pixels

    vqgan, clip = models.vqgan, models.clip
    rows, columns = geometry.tokens
    dim = vqgan.config.embed_dim
    device = clip.device
    sources = to_pixels(models.source, device)
    off = torch.autocast(device.type, enabled=False)
    default = DefaultSettings(cutn=cutn)
    windows = canvas_from_geometry(geometry).decode_windows(default.context_tokens)
    left, top, right, bottom = geometry.source_box
    base = torch.zeros(1, 3, geometry.height, geometry.width, device=device)
    base[..., top:bottom, left:right] = sources

    def decode_full() -> None:
        z = torch.randn(1, dim, rows, columns, device=device, requires_grad=True)
        vqgan.decode_latents(vqgan.quantize(z)[0]).sum().backward()

    def decode_windows() -> None:
        z = torch.randn(1, dim, rows, columns, device=device, requires_grad=True)
        decode_canvas_windows(vqgan, vqgan.quantize(z)[0], base, windows, off).sum().backward()

    def decode_display() -> None:
        with torch.no_grad():
            vqgan.decode_latents(torch.randn(1, dim, rows, columns, device=device))

    canvas = torch.rand(1, 3, geometry.height, geometry.width, device=device)
    classic_cuts = ClassicCutouts(clip.image_size, cutn)
    even_cuts = EvenCutouts(default.cutout_settings())

    def cut_classic() -> None:
        x = canvas.clone().requires_grad_(True)
        classic_cuts(x).sum().backward()

    def cut_even() -> None:
        x = canvas.clone().requires_grad_(True)
        even_cuts(x, [torch.Generator().manual_seed(0)]).sum().backward()

    def clip_views() -> None:
        x = torch.rand(cutn, 3, clip.image_size, clip.image_size, device=device, requires_grad=True)
        clip.encode_images(x).sum().backward()

    def clip_views_forward() -> None:
        with torch.no_grad():
            clip.encode_images(torch.rand(cutn, 3, clip.image_size, clip.image_size, device=device))

    def bf16(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with bf16_autocast(device, True):
                fn()

        return run

    def png() -> None:
        import io

        to_images(canvas, truncate=True)[0].save(io.BytesIO(), format='PNG')

    parts = {
        'vqgan decode fwd+bwd, whole canvas (classic)': decode_full,
        'vqgan decode fwd+bwd, two side windows (default)': decode_windows,
        'vqgan decode no-grad (classic display, 1 in 20 steps)': decode_display,
        f'cutouts fwd+bwd, {cutn} classic (loop + kornia)': cut_classic,
        f'cutouts fwd+bwd, {cutn} even (one grid_sample)': cut_even,
        f'CLIP image fwd+bwd, {cutn} views': clip_views,
        f'CLIP image fwd only, {cutn} views': clip_views_forward,
        'PNG encode of the frame (classic faithful_io)': png,
    }
    if device.type == 'cuda' or native_bf16_cpu():
        parts['vqgan decode fwd+bwd, two side windows, bf16 autocast'] = bf16(decode_windows)
        parts[f'CLIP image fwd+bwd, {cutn} views, bf16 autocast'] = bf16(clip_views)
        parts[f'CLIP image fwd only, {cutn} views, bf16 autocast'] = bf16(clip_views_forward)
    out = {}
    for name, fn in parts.items():
        wall, cpu = _best(fn)
        out[name] = {'wall': wall, 'cpu': cpu}
        print(f'  {name:58s} wall {wall:7.2f} s   CPU {cpu:7.2f} s', flush=True)
    return out


def forward_only_fraction(geometry: Geometry, cutn: int, steps: int) -> float:
    """Share of the default method's views that read only the kept picture (CLIP forward only, no backward)."""
    views = EvenCutouts(DefaultSettings(cutn=cutn).cutout_settings())
    generator = torch.Generator().manual_seed(SEED)
    canvas = torch.zeros(1, 3, geometry.height, geometry.width)
    moving = moving_pixels(canvas_from_geometry(geometry))
    inside = [~views_needing_grad(views.sample(canvas, [generator])[1], moving) for _ in range(steps)]
    return float(torch.cat(inside).float().mean())


def bf16_agreement(models: Models, geometry: Geometry, cutn: int) -> dict[str, float]:
    """One real default step with autocast off and on, same views: how far apart are the gradients on the sides?

    The gradients are read in an optimizer pre-step hook, so this is `run_default`'s own step.
    Adam's first update is ≈ lr·sign(gradient), so the sign agreement says how many side
    latent entries move the same way.
    """
    grads: dict[str, torch.Tensor] = {}
    losses: dict[str, float] = {}
    for name, amp in (('fp32', False), ('bf16', True)):

        def grab(optimizer: torch.optim.Optimizer, args: object, kwargs: object, name: str = name) -> None:
            grads[name] = torch.cat([p.grad.flatten() for group in optimizer.param_groups for p in group['params']])

        handle = register_optimizer_step_pre_hook(grab)
        try:
            item = DefaultItem(models.source, models.tokens, PROMPT, SEED)
            out = run_default(models.vqgan, models.clip, [item], geometry, DefaultSettings(steps=1, cutn=cutn, amp=amp))
        finally:
            handle.remove()
        losses[name] = out.losses[0][0]
    a, b = grads['fp32'].double(), grads['bf16'].double()
    return {
        'cosine': float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
        'relative_l2': float((a - b).norm() / a.norm()),
        'sign_agreement': float((torch.sign(a) == torch.sign(b)).double().mean()),
        'sign_agreement_weighted': float(((torch.sign(a) == torch.sign(b)).double() * a.abs()).sum() / a.abs().sum()),
        'loss_fp32': losses['fp32'],
        'loss_bf16': losses['bf16'],
    }


# ----------------------------------------------------------------------------- report


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float('nan')


def summarise(variant: Variant) -> dict[str, float]:
    runs = variant.runs
    walls = [w for r in runs for w in r['step_wall']]
    cpus = [c for r in runs for c in r['step_cpu']]
    step_wall, step_cpu = _median(walls), _median(cpus)
    return {
        'step_wall': step_wall,
        'step_wall_min': min(walls) if walls else float('nan'),
        'step_cpu': step_cpu,
        'step_cpu_min': min(cpus) if cpus else float('nan'),
        'setup_wall': max(0.0, min(r['first_wall'] for r in runs) - step_wall),
        'setup_cpu': max(0.0, min(r['first_cpu'] for r in runs) - step_cpu),
        'final_wall': _median([r['final_wall'] for r in runs]),
        'final_cpu': _median([r['final_cpu'] for r in runs]),
        'peak_gb': max(r['peak_gb'] for r in runs),
        'steps_measured': len(walls),
    }


def expansion_seconds(summary: dict[str, float], steps: int, clock: str) -> float:
    """Setup + steps × median step + final decode: a whole expansion from a few timed steps."""
    return summary[f'setup_{clock}'] + steps * summary[f'step_{clock}'] + summary[f'final_{clock}']


def _loads(load: tuple[float, ...]) -> str:
    return ' '.join(f'{x:.2f}' for x in load)


def verdict(ratio: float, target: float) -> str:
    return 'PASS' if ratio <= target else 'FAIL'


# ----------------------------------------------------------------------------- canvas operations (--canvas)

PAN_TARGET = 1.3  # a pan of a 768-wide picture costs at most this × a pan of a 256-wide one, per step
FRAMES_TARGET = 0.01  # recording a frame costs well under 1 % of a step


@dataclass
class CanvasVariant:
    """One canvas operation at the default settings; `runs` as `run_once` gives them."""

    name: str
    canvas: Canvas
    source: Any  # PIL image or None
    tokens: np.ndarray | None
    record_every: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)


def canvas_variants(models: Models) -> list[CanvasVariant]:
    """Expand 16:9, pan right of a 256- and a 768-wide picture, zoom 1.5× and 2×, dream 256² with frames off and on."""
    wide_tokens = np.random.RandomState(SEED + 1).randint(0, models.vqgan.codebook.shape[0], (16, 48))
    with torch.no_grad():
        codes = torch.as_tensor(wide_tokens, device=models.clip.device)[None]
        wide = to_images(models.vqgan.decode_tokens(codes))[0]  # 768 × 256, as two pans would leave it
    square = (models.source.size, models.source, models.tokens)
    return [
        CanvasVariant('expand 16:9', canvas_for_ratio(square[0], RATIO), *square[1:]),
        CanvasVariant('pan right 256', canvas_for_pan(square[0], 'right'), *square[1:]),
        CanvasVariant('pan right 768', canvas_for_pan(wide.size, 'right'), wide, wide_tokens),
        CanvasVariant('zoom 1.5x', canvas_for_zoom(square[0], 1.5), *square[1:]),
        CanvasVariant('zoom 2x', canvas_for_zoom(square[0], 2.0), *square[1:]),
        CanvasVariant('dream 256', canvas_for_dream('1:1'), None, None),
        CanvasVariant('dream 256 frames', canvas_for_dream('1:1'), None, None, record_every=1),
    ]


def run_canvas_once(variant: CanvasVariant, models: Models, settings: DefaultSettings, device: str) -> dict[str, Any]:
    """One real `run_canvas` of `settings.steps` steps: per-step wall/CPU times, setup, final, peak memory, checks."""
    cuda = device == 'cuda'
    stamps: list[tuple[float, float]] = []
    recording: list[float] = []

    def observer(step: int, z: torch.Tensor) -> None:
        if cuda:
            torch.cuda.synchronize()
        stamps.append((time.perf_counter(), time.process_time()))

    original = FrameRecorder.record

    def timed_record(self: FrameRecorder, step: int, image: torch.Tensor) -> None:
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        original(self, step, image)
        if cuda:
            torch.cuda.synchronize()
        recording.append(time.perf_counter() - started)

    item = CanvasItem(variant.source, variant.tokens, PROMPT, SEED)
    _reset_peak_rss()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    FrameRecorder.record = timed_record  # type: ignore[method-assign]
    try:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        out = run_canvas(
            models.vqgan, models.clip, [item], variant.canvas, settings, observer=observer, record_every=variant.record_every
        )
        if cuda:
            torch.cuda.synchronize()
        wall1, cpu1 = time.perf_counter(), time.process_time()
    finally:
        FrameRecorder.record = original  # type: ignore[method-assign]
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else _peak_rss_gb()
    result: dict[str, Any] = {
        'steps': settings.steps,
        'step_wall': [b[0] - a[0] for a, b in zip(stamps, stamps[1:], strict=False)],
        'step_cpu': [b[1] - a[1] for a, b in zip(stamps, stamps[1:], strict=False)],
        'first_wall': stamps[0][0] - wall0,
        'first_cpu': stamps[0][1] - cpu0,
        'final_wall': wall1 - stamps[-1][0],
        'final_cpu': cpu1 - stamps[-1][1],
        'peak_gb': peak,
        'record_seconds': recording[: settings.steps],  # the in-loop frames (the last one is the final picture)
        'frames': len(out.frames[0]),
        'size': list(out.images[0].size),
    }
    if variant.source is not None and variant.canvas.mode == 'extend':
        box = variant.canvas.source_box
        kept = np.asarray(out.images[0])[box[1] : box[3], box[0] : box[2]]
        result['source_exact'] = bool(np.array_equal(kept, np.asarray(variant.source)))
    return result


def clip_seconds_per_view(models: Models, views: int, device: torch.device) -> float:
    """CLIP forward + backward of `views` views under the step's autocast, ÷ views (the cost model's per_view)."""
    clip = models.clip
    amp = bf16_autocast(device, True)

    def views_fwd_bwd() -> None:
        x = torch.rand(views, 3, clip.image_size, clip.image_size, device=device, requires_grad=True)
        with amp:
            clip.encode_images(x).float().sum().backward()

    return _best(views_fwd_bwd)[0] / views


def canvas_main(args: argparse.Namespace, models: Models, machine: dict[str, Any]) -> None:
    """Per step of each canvas operation side by side, the targets, the recording's cost, the fitted ETA model."""
    cuda = args.device == 'cuda'
    timed = args.timed_steps or (TIMED_STEPS_CUDA if cuda else TIMED_STEPS)
    settings = DefaultSettings(steps=1 + timed)
    variants = canvas_variants(models)
    for variant in variants:
        c = variant.canvas
        print(
            f'  {variant.name:18s} {c.width}×{c.height}, decode windows {c.decode_windows(settings.context_tokens)} '
            f'({c.decoded_tokens(settings.context_tokens)} tokens)'
        )
    for round_index in range(args.rounds):
        for variant in variants:
            run = run_canvas_once(variant, models, settings, args.device)
            variant.runs.append(run)
            print(
                f'round {round_index + 1}/{args.rounds} {variant.name:18s} {settings.steps} steps: '
                f'step wall {_median(run["step_wall"]):7.2f} s, CPU {_median(run["step_cpu"]):7.2f} s; '
                f'load {os.getloadavg()[0]:.2f}',
                flush=True,
            )
    summaries = {v.name: summarise(v) for v in variants}  # type: ignore[arg-type]
    machine['load_after'] = os.getloadavg()
    base = summaries['expand 16:9']
    measured = base['steps_measured']
    print(f'\nper step (median over {measured} timed steps per variant; min in brackets), {settings.cutn} views')
    columns = ('wall s', 'CPU s', '× 16:9', 'setup s', 'final s', 'peak GB')
    widths = (16, 16, 7, 8, 8, 8)
    print(f'  {"variant":18s} {"size":>9s} ' + ' '.join(f'{c:>{w}s}' for c, w in zip(columns, widths, strict=True)))
    for v in variants:
        s = summaries[v.name]
        print(
            f'  {v.name:18s} {v.canvas.width:4d}×{v.canvas.height:<4d} {s["step_wall"]:7.2f} ({s["step_wall_min"]:6.2f}) '
            f'{s["step_cpu"]:7.2f} ({s["step_cpu_min"]:6.2f}) {s["step_cpu"] / base["step_cpu"]:7.2f} '
            f'{s["setup_wall"]:8.2f} {s["final_wall"]:8.2f} {s["peak_gb"]:8.2f}'
        )
    ratios: dict[str, float] = {}
    checks: dict[str, Any] = {}
    print('\nratios per step (CPU time; wall in brackets)')

    def ratio(name: str, over: str, under: str, target: float | None = None) -> None:
        cpu = summaries[over]['step_cpu'] / summaries[under]['step_cpu']
        wall = summaries[over]['step_wall'] / summaries[under]['step_wall']
        ratios[name] = cpu
        ratios[name + '_wall'] = wall
        judged = f'  target ≤ {target}: {verdict(cpu, target)}' if target is not None else ''
        print(f'  {over} / {under}: {cpu:6.3f} ({wall:6.3f}){judged}')

    ratio('pan_768_over_256', 'pan right 768', 'pan right 256', PAN_TARGET)
    ratio('zoom_1_5_over_expand', 'zoom 1.5x', 'expand 16:9')
    ratio('zoom_2_over_expand', 'zoom 2x', 'expand 16:9')
    ratio('dream_over_expand', 'dream 256', 'expand 16:9')
    ratio('frames_on_over_off', 'dream 256 frames', 'dream 256')
    recorded = [t for r in next(v for v in variants if v.record_every).runs for t in r['record_seconds']]
    share = _median(recorded) / summaries['dream 256 frames']['step_wall']
    checks['record_seconds'] = _median(recorded)
    checks['record_share'] = share
    print(
        f'  recording one frame (timed inside the step, {len(recorded)} calls): {_median(recorded) * 1000:.2f} ms = '
        f'{share:.3%} of a step; target < {FRAMES_TARGET:.0%}: {verdict(share, FRAMES_TARGET)}'
    )
    exact = [r['source_exact'] for v in variants for r in v.runs if 'source_exact' in r]
    checks['source_exact'] = all(exact)
    print(f'  source pixels bit-exact in the extend outputs: {sum(exact)}/{len(exact)}')
    frames_ok = all(r['frames'] == settings.steps + 1 for v in variants if v.record_every for r in v.runs)
    checks['frame_count'] = frames_ok
    print(f'  frames per run = steps + 1 with record_every 1: {frames_ok}')

    device = torch.device(models.clip.device)
    per_view = clip_seconds_per_view(models, settings.cutn, device)
    samples = [StepSample.of(v.canvas, settings.cutn, 1, summaries[v.name]['step_cpu']) for v in variants]
    costs = fit_step_costs(samples, 'cuda-bf16' if cuda else 'cpu-bf16' if native_bf16_cpu() else 'cpu-fp32', per_view)
    print(
        f'\nETA model (edalle.expander.cost), fitted to these steps with CLIP measured alone ({per_view:.4f} s/view): '
        f'fixed {costs.fixed:.4f} s, per token {costs.per_token:.6f} s, per token pair {costs.per_pair:.3e} s'
    )
    errors = {}
    for v in variants:
        estimate = estimate_step_seconds(v.canvas, settings.cutn, costs)
        errors[v.name] = estimate / summaries[v.name]['step_cpu'] - 1
        measured = summaries[v.name]['step_cpu']
        print(f'  {v.name:18s} estimate {estimate:7.2f} s, measured {measured:7.2f} s ({errors[v.name]:+.1%})')
    if args.json:
        report = {
            'machine': machine,
            'args': {k: str(v) for k, v in vars(args).items()},
            'summaries': summaries,
            'ratios': ratios,
            'checks': checks,
            'costs': asdict(costs),
            'estimate_errors': errors,
            'runs': {v.name: v.runs for v in variants},
        }
        args.json.write_text(json.dumps(report, indent=1))
    print(f'\nload average after: {_loads(machine["load_after"])}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--scale', default='real', choices=['real', 'tiny'], help='tiny: the test models (for the test)')
    parser.add_argument('--cutn', type=int, default=EQUAL_CUTN, help='views per step at equal cutouts')
    parser.add_argument('--timed-steps', type=int, default=None, help='timed steps per run (CPU; CUDA: per-step runs)')
    parser.add_argument('--rounds', type=int, default=ROUNDS)
    parser.add_argument('--threads', type=int, default=THREADS, help='torch threads on the CPU')
    parser.add_argument('--profile', action='store_true', help='time each component of a step first')
    parser.add_argument('--no-fp32', action='store_true', help='skip the default method with autocast off')
    parser.add_argument('--json', type=Path, help='write every figure here')
    parser.add_argument('--canvas', action='store_true', help='the canvas operations (pan, zoom, dream, frames) instead')
    args = parser.parse_args()

    cuda = args.device == 'cuda'
    if not cuda:
        torch.set_num_threads(args.threads)
    timed = args.timed_steps or (TIMED_STEPS_CUDA if cuda else TIMED_STEPS)
    geometry = compute_geometry(RATIO)
    started = time.perf_counter()
    models = build_models(args.scale, args.device)
    print(f'models ({args.scale}) built in {time.perf_counter() - started:.1f} s', flush=True)
    load = os.getloadavg()
    machine = {
        'device': torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        'cpus': os.cpu_count(),
        'threads': torch.get_num_threads(),
        'torch': torch.__version__,
        'load_before': load,
    }
    print(
        f'{RATIO} → {geometry.width}×{geometry.height}; {machine["device"]}, {machine["cpus"]} CPUs, '
        f'torch {torch.__version__} with {machine["threads"]} thread(s); load average {_loads(load)}'
    )

    if args.canvas:
        canvas_main(args, models, machine)
        return

    profiled = None
    if args.profile:
        print(f'\nprofile: one step at {args.cutn} views, by component (min of 2 after a warm-up)')
        profiled = profile(models, geometry, args.cutn)
        if native_bf16_cpu() and not cuda:
            agreement = bf16_agreement(models, geometry, args.cutn)
            profiled['bf16_agreement'] = agreement
            print(
                f'  bf16 vs fp32, one default step, gradient on the sides: cosine {agreement["cosine"]:.4f}, '
                f'relative L2 {agreement["relative_l2"]:.3f}, same sign {agreement["sign_agreement"]:.3f} '
                f'({agreement["sign_agreement_weighted"]:.3f} weighted by |g|); '
                f'loss {agreement["loss_fp32"]:.5f} vs {agreement["loss_bf16"]:.5f}'
            )

    classic_defaults, default_defaults = ClassicSettings(), DefaultSettings()
    variants = [
        Variant('classic', 'classic', replace(classic_defaults, cutn=args.cutn)),
        Variant('default@equal', 'default', replace(default_defaults, cutn=args.cutn)),
        Variant('classic io off', 'classic', replace(classic_defaults, cutn=args.cutn, faithful_io=False)),
        Variant('default', 'default', default_defaults),
    ]
    if not args.no_fp32 and not cuda:
        variants.insert(2, Variant('default@equal fp32', 'default', replace(default_defaults, cutn=args.cutn, amp=False)))
    by_name = {v.name: v for v in variants}

    for round_index in range(args.rounds):
        for variant in variants:
            steps = variant.settings.steps if cuda and variant.name in ('classic', 'default') else 1 + timed
            run = run_once(variant, models, geometry, steps, args.device)
            variant.runs.append(run)
            print(
                f'round {round_index + 1}/{args.rounds} {variant.name:20s} {steps:3d} steps: '
                f'step wall {_median(run["step_wall"]):7.2f} s, CPU {_median(run["step_cpu"]):7.2f} s; '
                f'load {os.getloadavg()[0]:.2f}',
                flush=True,
            )

    summaries = {v.name: summarise(v) for v in variants}
    machine['load_after'] = os.getloadavg()
    print(f'\nper step (median over {summaries["classic"]["steps_measured"]} timed steps per variant; min in brackets)')
    print(f'  {"variant":20s} {"views":>5s} {"wall s":>16s} {"CPU s":>16s} {"setup s":>8s} {"final s":>8s} {"peak GB":>8s}')
    for v in variants:
        s = summaries[v.name]
        print(
            f'  {v.name:20s} {v.settings.cutn:5d} {s["step_wall"]:7.2f} ({s["step_wall_min"]:6.2f}) '
            f'{s["step_cpu"]:7.2f} ({s["step_cpu_min"]:6.2f}) '
            f'{s["setup_wall"]:8.2f} {s["final_wall"]:8.2f} {s["peak_gb"]:8.2f}'
        )

    checks: dict[str, Any] = {}
    ratios: dict[str, float] = {}
    classic_s, equal_s = summaries['classic'], summaries['default@equal']
    print(f'\n(a) per step at equal steps and cutouts ({args.cutn} views): default / classic, target ≤ {TARGET_PER_STEP}')
    for clock in ('wall', 'cpu'):
        for base in ('classic', 'classic io off'):
            ratio = equal_s[f'step_{clock}'] / summaries[base][f'step_{clock}']
            ratios[f'per_step_{clock}_vs_{base}'] = ratio
            print(f'  {clock:4s} vs {base:15s} {ratio:6.3f}  {verdict(ratio, TARGET_PER_STEP)}')
    if 'default@equal fp32' in summaries:
        for clock in ('wall', 'cpu'):
            ratio = summaries['default@equal fp32'][f'step_{clock}'] / classic_s[f'step_{clock}']
            ratios[f'per_step_{clock}_fp32_vs_classic'] = ratio
            print(f'  {clock:4s} fp32 default vs classic {ratio:6.3f}  (autocast off: what the algorithm alone gives)')

    default_s = summaries['default']
    print(
        f'\n(b) per expansion at defaults (default {default_defaults.steps} × {default_defaults.cutn}, '
        f'classic {classic_defaults.steps} × {classic_defaults.cutn}): target ≤ {TARGET_PER_EXPANSION}'
    )
    expansions: dict[str, dict[str, float]] = {}
    for clock in ('wall', 'cpu'):
        if cuda:
            d = _median([r[f'total_{clock}'] for r in by_name['default'].runs])
            c = _median([r[f'total_{clock}'] for r in by_name['classic'].runs])
        else:
            d = expansion_seconds(default_s, default_defaults.steps, clock)
            c = expansion_seconds(classic_s, classic_defaults.steps, clock)
        expansions[clock] = {'default': d, 'classic': c}
        ratio = d / c
        ratios[f'per_expansion_{clock}'] = ratio
        how = 'timed whole' if cuda else 'setup + steps × median step + final'
        print(
            f'  {clock:4s} default {d:8.1f} s, classic {c:8.1f} s ({how}): '
            f'{ratio:6.3f}  {verdict(ratio, TARGET_PER_EXPANSION)}'
        )

    print('\n(c) safeguards')
    exact = [r['centre_exact'] for v in variants if v.method == 'default' for r in v.runs]
    checks['centre_exact'] = all(exact)
    print(
        f'  default output centre 256×256 == source, bit for bit: {sum(exact)}/{len(exact)} runs  '
        f'{"PASS" if all(exact) else "FAIL"}'
    )
    cover = {
        'classic': column_coverage(geometry, classic_defaults.cutn, 'classic', COVERAGE_STEPS),
        'default': column_coverage(geometry, default_defaults.cutn, 'default', COVERAGE_STEPS),
    }
    checks['coverage'] = cover
    for name, c in cover.items():
        views = classic_defaults.cutn if name == 'classic' else default_defaults.cutn
        steps = classic_defaults.steps if name == 'classic' else default_defaults.steps
        print(
            f'  {name:8s} column coverage min {c["min"]:.3f} max {c["max"]:.3f}; new bands min {c["band_min"]:.3f} '
            f'mean {c["band_mean"]:.3f} (centre {c["centre_mean"]:.3f}); least-seen band column ≈ '
            f'{c["band_min"] * views:.1f} views/step, {c["band_min"] * views * steps:.0f} per expansion'
        )
    forward_only = forward_only_fraction(geometry, args.cutn, COVERAGE_STEPS // 4)
    checks['forward_only_views'] = forward_only
    print(f'  default views that read only the kept picture (CLIP forward only): {forward_only:.1%}')
    even = cover['default']['min'] / cover['default']['max']
    checks['even_coverage'] = even >= 0.5
    print(f'  default coverage min/max {even:.2f} (even: ≥ 0.5)  {"PASS" if even >= 0.5 else "FAIL"}')

    print('\n(d) latent movement of the new bands (mean |Δz| per entry per step) and Σ lr over a whole expansion')
    movement = {}
    for name, settings in (('classic', classic_defaults), ('default', default_defaults)):
        runs = by_name[name].runs
        moves = [m for r in runs for m in r['latent_move']]
        lrs = [r['lr'][i + 1] for r in runs for i in range(len(r['latent_move']))]
        total_lr = (
            settings.lr * settings.steps if name == 'classic' else sum(_cosine(i, settings) for i in range(settings.steps))
        )
        movement[name] = {
            'move_per_step': _median(moves),
            'move_per_lr': _median([m / lr for m, lr in zip(moves, lrs, strict=True)]),
            'sum_lr': total_lr,
        }
        print(
            f'  {name:8s} |Δz| {movement[name]["move_per_step"]:.4f} per step = {movement[name]["move_per_lr"]:.2f} × lr; '
            f'Σ lr over {settings.steps} steps = {total_lr:.1f}'
        )

    if args.json:
        report = {
            'machine': machine,
            'args': {k: str(v) for k, v in vars(args).items()},
            'geometry': geometry.describe(),
            'summaries': summaries,
            'ratios': ratios,
            'expansions': expansions,
            'checks': checks,
            'movement': movement,
            'profile': profiled,
            'runs': {v.name: v.runs for v in variants},
        }
        args.json.write_text(json.dumps(report, indent=1))
    print(f'\nload average after: {_loads(machine["load_after"])}')


if __name__ == '__main__':
    main()
