"""Vary and repaint against imagine, side by side in one process: what keeping part of a picture saves.

The engine gets the published sizes with random weights (compute does not depend on weight values):
DalleBart mini (or mega), the f16-16384 VQGAN and CLIP ViT-B/32, with the tiny preset's tokenizer (its
ids are valid mini ids; a prompt's length is what costs). One imagine of nine draws the pick; then, each
round, cases alternate (A B C D E A B C D E …) so other load on a shared machine hits them alike, and each
figure is the best round:

- an imagine of nine (sample 256 tokens × 9, decode nine, rank);
- a subtle variation of nine (12 of 16 token rows forced and prefilled, 64 sampled, the bottom half decoded,
  ranked with the likeness to the pick), and a strong one (4 rows kept) for reference;
- a repaint by tokens of one 2×2-cell region, B2:C3 (the centre: 4 rows prefilled, 192 sampled and scored,
  four samples, the region's window decoded), the default of the bot.

Targets (issue 16): a subtle variation of nine ≤ 0.5 × an imagine of nine; a tokens repaint of one 2×2-cell
region ≤ 0.6 ×. Then the CLIP repaint of B2:C3 and an expand to 16:9 run `--clip-steps` steps each, one after
the other, `--rounds` times, and their time per step is reported side by side (no target).

    python bench/variation.py                   # mini, CPU
    python bench/variation.py --model tiny      # a smoke run of the script
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPT = 'a lighthouse in a storm, oil painting'
SEED = 7
REGION = 'B2:C3'  # one 2×2-cell region: token rows and columns 4–11


def random_engine(model: str, device: str, dtype: str, data_dir: Path) -> Any:
    """An `Engine` of the published sizes with random weights (the tokenizer of the tiny preset)."""
    from edalle.config import BART_CONFIGS, VQGAN_CONFIGS
    from edalle.engine import Engine
    from edalle.loading import load_tokenizer, prepare_sampler_for
    from edalle.models.bart import init_params
    from edalle.models.clip import ClipModel
    from edalle.models.vqgan import VQGAN
    from edalle.presets import get_preset
    from edalle.weights import ensure_tiny

    if model == 'tiny':
        return Engine.load('tiny', data_dir, device=device, dtype=dtype)
    ensure_tiny(data_dir)
    config = BART_CONFIGS[model]
    weights = prepare_sampler_for(config, init_params(config, seed=0), dtype)
    vqgan = VQGAN.random(VQGAN_CONFIGS['f16_16384'], seed=0).to(device).eval()
    clip = ClipModel.build_random('ViT-B-32', seed=0, device=device)
    tokenizer = load_tokenizer(get_preset('tiny'), data_dir)
    return Engine(get_preset(model), data_dir, tokenizer, config, weights, vqgan, clip, device, dtype)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from edalle.expander.api import CanvasRequest, ExpandRequest, expand
    from edalle.expander.api import run as run_canvas
    from edalle.expander.canvas import canvas_for_region
    from edalle.operations.imagine import ImagineRequest
    from edalle.operations.repaint import RepaintRequest, repaint
    from edalle.operations.vary import VaryRequest, vary

    device = args.device
    dtype = args.dtype or ('float32' if device == 'cpu' else 'bfloat16')
    started = time.perf_counter()
    engine = random_engine(args.model, device, dtype, Path(args.data_dir))
    setup = time.perf_counter() - started
    (grid,) = engine.imagine([ImagineRequest(PROMPT, n=9, seed=SEED)])  # compiles the imagine's programs
    pick = grid.candidates[0]

    def stages(result: Any) -> dict[str, float]:
        return {k: result.timings.get(k, 0.0) for k in ('sample', 'decode', 'rank')}

    def imagine_nine() -> Any:
        (result,) = engine.imagine([ImagineRequest(PROMPT, n=9, seed=SEED + 100)])
        return result

    def vary_nine(strength: str) -> Any:
        (result,) = vary(engine, [VaryRequest(pick.tokens, pick.image, PROMPT, strength, n=9, seed=SEED + 200)])
        return result

    def repaint_region() -> Any:
        (result,) = repaint(engine, [RepaintRequest(pick.tokens, pick.image, REGION, 'a red sailing boat', seed=SEED)])
        return result

    cases = {
        'imagine of 9': imagine_nine,
        'vary subtle of 9': lambda: vary_nine('subtle'),
        'vary strong of 9': lambda: vary_nine('strong'),
        f'repaint {REGION} by tokens (4 samples)': repaint_region,
    }
    out: dict[str, Any] = {'model': args.model, 'device': device, 'dtype': dtype, 'setup_s': setup, 'first_call_s': {}}
    outputs: dict[str, Any] = {}
    for name, case in cases.items():  # first calls: compile (or read the persistent cache)
        t0 = time.perf_counter()
        outputs[name] = case()
        out['first_call_s'][name] = time.perf_counter() - t0
    runs: dict[str, list[tuple[float, dict[str, float]]]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, case in cases.items():
            t0 = time.perf_counter()
            result = case()
            runs[name].append((time.perf_counter() - t0, stages(result)))
    out['runs'] = runs
    subtle, painted = outputs['vary subtle of 9'], outputs[f'repaint {REGION} by tokens (4 samples)']
    out['kept_rows_identical'] = all(np.array_equal(c.tokens[:12], pick.tokens[:12]) for c in subtle.candidates)
    inside = canvas_for_region((256, 256), REGION).free_mask()
    out['repaint_keeps_outside_tokens'] = bool(np.array_equal(painted.tokens[~inside], pick.tokens[~inside]))

    steps = args.clip_steps
    region_request = CanvasRequest(
        canvas_for_region((256, 256), REGION), pick.image, pick.tokens, 'a red sailing boat', steps=steps, seed=SEED
    )
    expand_request = ExpandRequest(pick.image, PROMPT, '16:9', pick.tokens, steps=steps, seed=SEED)
    per_step: dict[str, list[float]] = {'clip repaint': [], 'expand 16:9': []}
    for _ in range(args.rounds):
        per_step['clip repaint'].append(run_canvas(engine.vqgan, engine.clip, region_request).timings['per_step'])
        per_step['expand 16:9'].append(expand(engine.vqgan, engine.clip, expand_request).timings['per_step'])
    out['per_step'] = per_step
    return out


def report(out: dict[str, Any], args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print(f'# vary and repaint against imagine: {out["model"]}, {out["device"]}, {out["dtype"]}, random weights')
    print(f'# best of {args.rounds} alternating rounds; load average now {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}')
    print(f'# setup {out["setup_s"]:.1f} s')
    print('| case | s (sample + decode + rank) | first call s | all rounds s |')
    print('|---|---|---|---|')
    best = {}
    for name, rounds in out['runs'].items():
        seconds, parts = min(rounds, key=lambda r: r[0])
        best[name] = seconds
        split = ' + '.join(f'{parts[k]:.2f}' for k in ('sample', 'decode', 'rank'))
        every = ', '.join(f'{r[0]:.2f}' for r in rounds)
        print(f'| {name} | {seconds:.2f} ({split}) | {out["first_call_s"][name]:.1f} | {every} |')

    def verdict(ratio: float, target: float) -> str:
        return 'PASS' if ratio <= target else 'FAIL'

    imagine = best['imagine of 9']
    subtle = best['vary subtle of 9'] / imagine
    painted = best[f'repaint {REGION} by tokens (4 samples)'] / imagine
    print(f'subtle variation of nine / imagine of nine: {subtle:.3f} (target ≤ 0.5): {verdict(subtle, 0.5)}')
    print(f'strong variation of nine / imagine of nine: {best["vary strong of 9"] / imagine:.3f} (no target)')
    print(f'tokens repaint of {REGION} / imagine of nine: {painted:.3f} (target ≤ 0.6): {verdict(painted, 0.6)}')
    clip_step, expand_step = (min(out['per_step'][k]) for k in ('clip repaint', 'expand 16:9'))
    print(
        f'clip repaint of {REGION}: {clip_step:.2f} s per step; expand 16:9: {expand_step:.2f} s per step '
        f'(ratio {clip_step / expand_step:.2f}; {args.clip_steps} steps a run, best of {args.rounds})'
    )
    print(
        f'kept rows token-identical: {out["kept_rows_identical"]}; '
        f'the repaint keeps every token outside the region: {out["repaint_keeps_outside_tokens"]}'
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', choices=('mini', 'mega', 'tiny'), default='mini', help='tiny: a smoke run of the script')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--dtype', default=None, help='DalleBart compute dtype (default float32 on CPU, bfloat16 on GPU)')
    parser.add_argument('--rounds', type=int, default=2, help='cases alternate A B C D A B C D …; the best round counts')
    parser.add_argument('--clip-steps', type=int, default=3, help='optimisation steps per CLIP repaint and expand run')
    parser.add_argument(
        '--data-dir', default=None, help='where the tiny preset (its tokenizer) is made (default: a temp dir)'
    )
    parser.add_argument('--json', action='store_true', help='print the raw results as JSON too')
    args = parser.parse_args()
    if args.device == 'cpu':
        os.environ['JAX_PLATFORMS'] = 'cpu'
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
    with tempfile.TemporaryDirectory() as scratch:
        args.data_dir = args.data_dir or scratch
        out = run(args)
    report(out, args)
    if args.json:
        print(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
