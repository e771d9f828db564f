"""×4 upscale: time and peak memory, tiled against untiled, the tiny RRDBNet and Real-ESRGAN x4plus's size.

Each case runs in a fresh subprocess (imports, weights, one picture), so one case's allocations
never count towards another's peak. The published-size network has random weights (spandrel
builds it from a state dict in the published layout, `rrdbnet_state_dict`): compute and
memory do not depend on weight values.

    python bench/upscale.py                               # every case below
    python bench/upscale.py --models tiny --sizes 256     # a subset
    python bench/upscale.py --device cuda                 # on a GPU (fp16)

Cases: model (tiny, published) × input side (256, 512) × tile side (128, 256 = `DEFAULT_TILE`,
none; a tile as large as the picture is the untiled case), in the dtype `load_upscaler` picks
(bf16 on CPUs with native bf16, fp16 on CUDA, else fp32), plus the published model at 256 untiled
in fp32 for the bf16/fp32 ratio.

Figures per case: loading (spandrel's import, reading the file, building the network), the
first upscale (oneDNN / cuDNN set-up included) and the best of the following rounds; memory as
Linux's VmRSS after loading and VmHWM during the upscales (the high-water mark is reset just
before them through /proc/self/clear_refs), so "upscale peak − loaded" is what the upscale adds.
On CUDA, `torch.cuda.max_memory_allocated` as well. "CPU s" is the process CPU time of the
fastest upscale: less sensitive than wall time to other load on a shared machine.

On the CPU torch gets one thread by default (`--threads`): on a 2-core machine that others share,
two OpenMP threads stall at every barrier when one is descheduled (measured here under load 7: a
64² published-size upscale took 15–17 s with two threads against 2–3 s with one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEED = 20220710


def _status_kb(field: str) -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    raise KeyError(field)


def run_case(model: str, side: int, tile: int | None, dtype_name: str, device: str, rounds: int, threads: int) -> dict:
    """One case, in this process: load, then upscale a side × side picture `rounds` times."""
    import numpy as np
    import torch
    from PIL import Image

    if threads:
        torch.set_num_threads(threads)
    from edalle.models.upscaler import REALESRGAN_X4PLUS, TINY_RRDBNET, load_upscaler, write_rrdbnet_weights

    size = {'tiny': TINY_RRDBNET, 'published': REALESRGAN_X4PLUS}[model]
    dtype = None if dtype_name == 'auto' else getattr(torch, dtype_name)
    with tempfile.TemporaryDirectory() as scratch:
        weights = Path(scratch) / 'RealESRGAN_x4plus.pth'
        write_rrdbnet_weights(weights, size, SEED)
        started = time.perf_counter()
        upscaler = load_upscaler(weights, device, dtype=dtype)
        load_s = time.perf_counter() - started
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
    picture = Image.fromarray(coarse).resize((side, side), Image.BICUBIC)

    def sync() -> None:
        if device == 'cuda':
            torch.cuda.synchronize()

    loaded_kb = _status_kb('VmRSS')
    Path('/proc/self/clear_refs').write_text('5')  # reset VmHWM to the current RSS
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    for _ in range(rounds):
        sync()
        started, cpu_started = time.perf_counter(), time.process_time()
        out = upscaler.upscale(picture, tile=tile)
        sync()
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    assert out.size == (4 * side, 4 * side)
    return {
        'model': model,
        'side': side,
        'tile': tile,
        'dtype': str(upscaler.dtype).removeprefix('torch.'),
        'device': device,
        'threads': torch.get_num_threads(),
        'load_s': load_s,
        'first_s': times[0],
        'best_s': min(times[1:]) if len(times) > 1 else None,
        'cpu_s': min(cpu_times),
        'loaded_mb': loaded_kb / 1024,
        'peak_mb': _status_kb('VmHWM') / 1024,
        'cuda_peak_mb': torch.cuda.max_memory_allocated() / 2**20 if device == 'cuda' else None,
    }


def _in_subprocess(model: str, side: int, tile: int | None, dtype: str, device: str, rounds: int, threads: int) -> dict:
    command = [sys.executable, __file__, '--one', model, str(side), str(tile or 0), dtype, '--device', device]
    command += ['--rounds', str(rounds), '--threads', str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f'{" ".join(command)} failed:\n{done.stderr[-3000:]}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(r: dict) -> str:
    tile = 'none' if not r['tile'] else str(r['tile'])
    best = f'{r["best_s"]:.2f}' if r['best_s'] is not None else '–'
    cuda = f' | {r["cuda_peak_mb"]:,.0f}' if r['cuda_peak_mb'] is not None else ''
    return (
        f'| {r["model"]} | {r["side"]}² → {4 * r["side"]}² | {tile} | {r["dtype"]} | {r["load_s"]:.2f} | '
        f'{r["first_s"]:.2f} | {best} | {r["cpu_s"]:.2f} | {r["loaded_mb"]:,.0f} | {r["peak_mb"]:,.0f} | '
        f'{r["peak_mb"] - r["loaded_mb"]:,.0f}{cuda} |'
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', default='tiny,published')
    parser.add_argument('--sizes', default='256,512')
    parser.add_argument('--tiles', default='128,256,none', help='tile sides to try; a tile ≥ the side is skipped (= none)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1; 0: torch decides)')
    parser.add_argument('--rounds', type=int, default=0, help='upscales per case (default: 3 for tiny, 1 published on CPU)')
    parser.add_argument('--one', nargs=4, metavar=('MODEL', 'SIDE', 'TILE', 'DTYPE'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model, side, tile, dtype = args.one
        rounds = args.rounds or 2
        print(json.dumps(run_case(model, int(side), int(tile) or None, dtype, args.device, rounds, args.threads)))
        return

    load = os.getloadavg()
    print(
        f'{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, device {args.device}, '
        f'torch threads {args.threads or "default"}'
    )
    print(f'load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}')
    tiles = [None if t == 'none' else int(t) for t in args.tiles.split(',')]
    cases = []
    for model in args.models.split(','):
        for side in (int(s) for s in args.sizes.split(',')):
            cases += [(model, side, tile, 'auto') for tile in tiles if tile is None or tile < side]
        if model == 'published' and args.device == 'cpu':
            cases.append((model, 256, None, 'float32'))  # against the same case in bf16, where the CPU has it
    columns = ['model', 'input → output', 'tile', 'dtype', 'load s', 'first s', 'best s', 'CPU s', 'loaded MB', 'peak MB']
    header = '| ' + ' | '.join([*columns, 'upscale adds MB']) + ' |'
    if args.device == 'cuda':
        header += ' CUDA peak MB |'
    print(header)
    print('|' + '---|' * (header.count('|') - 1))
    for model, side, tile, dtype in cases:
        rounds = args.rounds or (3 if model == 'tiny' or args.device == 'cuda' else 1)
        print(_row(_in_subprocess(model, side, tile, dtype, args.device, rounds, args.threads)), flush=True)
    load = os.getloadavg()
    print(f'load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}')


if __name__ == '__main__':
    main()
