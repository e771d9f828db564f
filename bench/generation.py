"""Generation speed: edalle's compiled Flax sampler against min-dalle's torch modules, in one run.

Both sides get the published sizes with random weights (compute does not depend on weight
values), the same prompt length, 256 image tokens, super-conditioning with the same scale,
the same top-k, and a VQGAN decode of every candidate. Ours are first written as a
checkpoint in the published layout (float32, scanned), then loaded the way `Engine.load` loads them,
so our peak memory includes loading. Each side runs in its own child
process so its peak memory is its own; the parent prints the ratios.

    python bench/generation.py                       # mini, CPU, 1 and 9 candidates
    python bench/generation.py --model mega --device cuda

Targets (issue 7): one candidate ≤ 0.67 × min-dalle's time; nine candidates ≤ 1.0 × min-dalle's
time for ONE candidate. First-call compile time is reported apart from the timed runs. On a GPU
(issue 22, `bench/gpu_check.sh`): nine ≤ 0.5 × min-dalle's nine (`--min-dalle-counts 1,9`), and a
ranked 3×3 grid in ≤ 1.5 s (mini) or ≤ 4 s (mega) once compiled.

Memory: each side's peak RSS (the process's high-water mark, loading included), and VmRSS after
each stage (imports, checkpoint read, sampler weights, VQGAN, each call), so a peak can be traced
to the stage that made it. min-dalle does not rank, so neither does our timed side; `--rank` then
builds CLIP (ViT-B-32, random) and scores each count's candidates as `Engine.rank` does, reporting
its time and what it adds to RSS apart (the high-water mark is reset before it).

    python bench/generation.py --model mini --counts 1 --rank    # the memory table: one candidate

    python bench/generation.py --sampler             # the sampler against an earlier commit's, in one process

`--sampler` measures sampling alone (no VQGAN, no min-dalle), every case in one process on the
same loaded weights, cases alternating round by round: nine candidates with default knobs
against the sampler at `--baseline-commit` (its `sampling.py` and `bart_decode.py` read with
`git show` into a temporary package), three jobs of three with different knobs against three
uniform ones, nine candidates with and without previews (painted from a code-colour table at
every chunk), and a variation that keeps 12 of the 16 token rows. Targets: default knobs
≤ 1.05 × the baseline, mixed knobs ≤ 1.1 × uniform.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

# ----------------------------------------------------------------------------- config
PROMPT_TOKENS = 16  # "a lighthouse in a storm, oil painting" is 11 BPE tokens plus <s> </s>
TOP_K = 50  # dalle-mini's effective default; min-dalle is told the same
COND_SCALE = 10.0  # min-dalle's `supercondition_factor` f gives uncond + f·(cond − uncond) too
SEED = 7
GRID_TARGET_S = {'mini': 1.5, 'mega': 4.0}  # a ranked 3×3 grid on one H100, once compiled (issue 22)
# -----------------------------------------------------------------------------


def verdict(value: float, target: float) -> str:
    return 'PASS' if value <= target else 'FAIL'


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def rss_gb(field: str = 'VmRSS') -> float:
    """Linux's VmRSS (now) or VmHWM (high-water mark since the start or the last `reset_peak_rss`), in GB."""
    try:
        for line in open('/proc/self/status').read().splitlines():
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return peak_rss_gb()


def reset_peak_rss() -> None:
    """VmHWM back to the current RSS, so the next peak is a later stage's own (no-op where /proc lacks it)."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pass


def write_checkpoint(model: str, path: str) -> None:
    """A scanned float32 `flax_model.msgpack` of random weights, like the presets' files (mini-1, dalle-mega).

    Built leaf by leaf from the shapes and written streaming, so mega needs about one copy in memory.
    """
    import jax
    import numpy as np
    from flax.traverse_util import flatten_dict, unflatten_dict

    from edalle.config import BART_CONFIGS
    from edalle.models.bart import init_params
    from edalle.models.bart_checkpoint import save_params

    rng = np.random.default_rng(0)
    leaves = {}
    for key, leaf in flatten_dict(jax.eval_shape(lambda: init_params(BART_CONFIGS[model], seed=0))).items():
        values = 0.02 * rng.standard_normal(leaf.shape, np.float32)
        leaves[key] = values + 1 if key[-1] == 'scale' else values
    save_params(unflatten_dict(leaves), path)


def run_ours(
    model: str, device: str, counts: list[int], dtype_name: str, checkpoint: str, rank: bool = False
) -> dict[str, Any]:
    """Load as `Engine.load` does, then time `counts` candidates: sampling and decode, ranking apart (`rank`).

    `rss_gb` holds VmRSS after each loading stage and each run, so the peak can be traced to a stage.
    With `rank`, a CLIP of the preset's size is built after the timed runs and each count's candidates
    are scored as `Engine.rank` scores them; its time and the memory it adds are reported on their own,
    so `peak_rss_gb` stays the like-for-like figure against min-dalle, which does not rank.
    """
    if device == 'cpu':
        os.environ['JAX_PLATFORMS'] = 'cpu'
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
    stages: dict[str, float] = {'start': rss_gb()}
    import jax
    import numpy as np
    import torch

    from edalle.config import BART_CONFIGS, VQGAN_CONFIGS
    from edalle.engine import decode_chunk
    from edalle.loading import prepare_sampler_for
    from edalle.models.bart_checkpoint import read_params
    from edalle.models.sampling import SamplingSettings, generate_image_tokens
    from edalle.models.vqgan import VQGAN

    stages['imports'] = rss_gb()
    config = BART_CONFIGS[model]
    started = time.perf_counter()
    # what Engine.load does: stream the checkpoint to host arrays, then hand them over to the sampler's copy
    params = read_params(checkpoint, config)
    stages['checkpoint read'] = rss_gb()
    weights = prepare_sampler_for(config, params, dtype_name)
    del params
    stages['sampler weights'] = rss_gb()
    stages['loading peak'] = rss_gb('VmHWM')
    vqgan = VQGAN.random(VQGAN_CONFIGS['tiny' if model == 'tiny' else 'f16_16384'], seed=0).to(device).eval()
    stages['vqgan'] = rss_gb()
    setup = time.perf_counter() - started

    rng = np.random.default_rng(0)
    text = np.full((1, config.max_text_length), config.pad_token_id, np.int32)
    text[0, 0], text[0, PROMPT_TOKENS - 1] = config.bos_token_id, config.eos_token_id
    text[0, 1 : PROMPT_TOKENS - 1] = rng.integers(4, config.encoder_vocab_size, PROMPT_TOKENS - 2)
    mask = (text != config.pad_token_id).astype(np.int32)
    uncond = np.full(config.max_text_length, config.pad_token_id, np.int32)
    uncond[:2] = [config.bos_token_id, config.eos_token_id]
    uncond_mask = (uncond != config.pad_token_id).astype(np.int32)
    settings = SamplingSettings(top_k=TOP_K, cond_scale=COND_SCALE)

    def generate(n: int, label: str = '') -> tuple[float, float, Any]:
        seeds = np.arange(SEED, SEED + n)
        t0 = time.perf_counter()
        tokens = generate_image_tokens(weights, config, text, mask, uncond, uncond_mask, seeds, n, settings)
        t1 = time.perf_counter()
        if label:
            stages[f'{label} sampled'] = rss_gb()
        with torch.inference_mode():
            codes = torch.from_numpy(tokens.reshape(n, 16, 16).astype(np.int64)).to(device)
            chunks = []
            for start in range(0, n, decode_chunk(device)):  # as Engine.imagine decodes
                chunks.append(vqgan.decode_tokens(codes[start : start + decode_chunk(device)]).float())
            if device == 'cuda':
                torch.cuda.synchronize()
        return t1 - t0, time.perf_counter() - t1, torch.cat(chunks)

    out: dict[str, Any] = {'side': 'edalle', 'setup_s': setup, 'dtype': dtype_name, 'runs': {}}
    pixels: dict[int, Any] = {}
    for n in counts:
        first_sample, _, _ = generate(n, f'{n} first call')  # compiles this batch bucket (or reads the persistent cache)
        stages[f'{n} first call decoded'] = rss_gb()
        sample, decode, pixels[n] = generate(n)
        stages[f'{n} timed call'] = rss_gb()
        out['runs'][n] = {
            'first_call_s': first_sample,
            'compile_s': max(first_sample - sample, 0.0),
            'sample_s': sample,
            'decode_s': decode,
            'total_s': sample + decode,
            'tokens_per_s': n * 256 / sample,
        }
    out['peak_rss_gb'] = peak_rss_gb()
    if device == 'cuda':
        stats = jax.devices()[0].memory_stats() or {}
        out['jax_peak_gpu_gb'] = stats.get('peak_bytes_in_use', 0) / 2**30
        out['torch_peak_gpu_gb'] = torch.cuda.max_memory_allocated() / 2**30
    if rank:
        out['rank'] = rank_cost(model, device, pixels, stages)
    out['rss_gb'] = stages
    return out


def rank_cost(model: str, device: str, pixels: dict[int, Any], stages: dict[str, float]) -> dict[str, Any]:
    """CLIP built at the preset's size (random weights) and each count's candidates scored as `Engine.rank` does.

    Measured after the timed runs: VmHWM is reset first, so `peak_gb` is the highest RSS while CLIP
    loads and scores, and `adds_gb` what ranking puts on top of everything already held.
    """
    before = rss_gb()  # open_clip's import counts as ranking's
    reset_peak_rss()
    import torch

    from edalle.models.clip import ClipModel

    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    if model == 'tiny':
        clip = ClipModel.build_tiny(0, device=device)
    else:
        clip = ClipModel.build_random('ViT-B-32', 0, device=device)  # the presets' CLIP (ViT-B-32)
    load_s = time.perf_counter() - started
    stages['clip'] = rss_gb()
    out: dict[str, Any] = {'clip_load_s': load_s, 'runs': {}}
    for n, batch in pixels.items():
        with torch.inference_mode():
            clip.score(batch, 'a lighthouse in a storm, oil painting')  # first call: oneDNN / cuDNN set-up
            if device == 'cuda':
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            clip.score(batch, 'a lighthouse in a storm, oil painting').cpu()
            out['runs'][n] = {'rank_s': time.perf_counter() - t0}
    peak = rss_gb('VmHWM')
    out |= {'rss_before_gb': before, 'peak_gb': peak, 'adds_gb': peak - before}
    if device == 'cuda':
        out['torch_peak_gpu_gb'] = torch.cuda.max_memory_allocated() / 2**30
    return out


def load_baseline_sampler(commit: str) -> tuple[Any, Any]:
    """The sampler (`sampling`, `bart_decode`) as it was at `commit`, imported from a temporary package."""
    import importlib
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    package = Path(tempfile.mkdtemp(prefix='edalle-baseline-')) / 'baseline_sampler'
    package.mkdir()
    (package / '__init__.py').write_text('')
    for name in ('bart_decode', 'sampling'):
        show = ['git', '-C', str(root), 'show', f'{commit}:edalle/models/{name}.py']
        source = subprocess.run(show, capture_output=True, text=True, check=True).stdout
        source = source.replace('from edalle.models.bart_decode import', 'from baseline_sampler.bart_decode import')
        (package / f'{name}.py').write_text(source)
    sys.path.insert(0, str(package.parent))
    return importlib.import_module('baseline_sampler.sampling'), importlib.import_module('baseline_sampler.bart_decode')


def as_baseline_weights(weights: Any, sampling: Any, bart_decode: Any) -> Any:
    """The same device arrays in the baseline's structs (its classes are its own, its fields ours)."""
    from dataclasses import fields

    def fields_of(obj: Any) -> dict[str, Any]:
        return {f.name: getattr(obj, f.name) for f in fields(obj)}

    decoder = fields_of(weights.decoder)
    decoder['layers'] = [bart_decode.DecoderLayerWeights(**fields_of(layer)) for layer in weights.decoder.layers]
    return sampling.SamplerWeights(encoder=weights.encoder, decoder=bart_decode.DecoderWeights(**decoder))


def run_sampler(
    model: str, device: str, dtype_name: str, checkpoint: str, rounds: int, baseline: str, chunk_repeats: int
) -> dict[str, Any]:
    """Sampling times (no VQGAN) for each case, the first call of each apart (compile), then `rounds` alternating."""
    if device == 'cpu':
        os.environ['JAX_PLATFORMS'] = 'cpu'
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
    import numpy as np

    from edalle.config import BART_CONFIGS
    from edalle.engine import prepare_sampler_for
    from edalle.models import sampling
    from edalle.models.bart_checkpoint import read_params
    from edalle.models.code_colours import paint_tokens
    from edalle.models.sampling import SampleRequest, SamplingSettings, generate_image_tokens, sample_image_tokens

    config = BART_CONFIGS[model]
    weights = prepare_sampler_for(config, read_params(checkpoint, config), dtype_name)
    old_sampling, old_decode = load_baseline_sampler(baseline)
    old_weights = as_baseline_weights(weights, old_sampling, old_decode)

    rng = np.random.default_rng(0)
    texts = np.full((3, config.max_text_length), config.pad_token_id, np.int32)
    texts[:, 0], texts[:, PROMPT_TOKENS - 1] = config.bos_token_id, config.eos_token_id
    texts[:, 1 : PROMPT_TOKENS - 1] = rng.integers(4, config.encoder_vocab_size, (3, PROMPT_TOKENS - 2))
    masks = (texts != config.pad_token_id).astype(np.int32)
    uncond = np.full(config.max_text_length, config.pad_token_id, np.int32)
    uncond[:2] = [config.bos_token_id, config.eos_token_id]
    uncond_mask = (uncond != config.pad_token_id).astype(np.int32)
    settings = SamplingSettings(top_k=TOP_K, cond_scale=COND_SCALE)
    nine = np.arange(SEED, SEED + 9)
    colours = rng.random((config.image_vocab_size, 3)).astype(np.float32)  # painting costs the same for any table
    knobs = [  # three jobs of one batch, each with its own knobs (one uses top-p, so the batch runs it for all)
        settings,
        SamplingSettings(top_k=None, top_p=0.9, temperature=0.8, cond_scale=5.0),
        SamplingSettings(top_k=20, temperature=1.3, cond_scale=7.5),
    ]
    outputs: dict[str, Any] = {}

    def jobs(settings_per_job: list) -> list:
        return [SampleRequest(texts[j], masks[j], nine[3 * j : 3 * j + 3], s) for j, s in enumerate(settings_per_job)]

    def preview(done: int, tokens: list) -> None:
        paint_tokens(tokens[0], colours, scale=4)

    def variation() -> Any:  # candidate 0's first 12 rows kept, nine new seeds
        kept = dict(forced_tokens=outputs['new'][0, 0], forced_mask=np.arange(config.image_length) < 12 * 16)
        return sample_image_tokens(
            weights, config, [SampleRequest(texts[0], masks[0], nine + 100, settings, **kept)], uncond, uncond_mask
        )

    cases = {
        'baseline': lambda: old_sampling.generate_image_tokens(
            old_weights,
            config,
            texts[:1],
            masks[:1],
            uncond,
            uncond_mask,
            nine,
            9,
            old_sampling.SamplingSettings(TOP_K, None, 1.0, COND_SCALE),
        ),
        'new': lambda: generate_image_tokens(weights, config, texts[:1], masks[:1], uncond, uncond_mask, nine, 9, settings),
        'uniform': lambda: sample_image_tokens(weights, config, jobs([settings] * 3), uncond, uncond_mask).tokens,
        'mixed': lambda: sample_image_tokens(weights, config, jobs(knobs), uncond, uncond_mask).tokens,
        'previews': lambda: (
            sample_image_tokens(
                weights, config, [SampleRequest(texts[0], masks[0], nine, settings)], uncond, uncond_mask, preview=preview
            ).tokens
        ),
        'variation': lambda: variation().tokens,
    }
    # wall time, and the process's CPU time (all threads): on a CPU shared with other work, CPU time is
    # far less disturbed by it, so both are kept and each ratio is given both ways
    out: dict[str, Any] = {'side': 'sampler', 'dtype': dtype_name, 'baseline': baseline}
    out |= {'first_call_s': {}, 'runs': {name: [] for name in cases}, 'cpu_runs': {name: [] for name in cases}}
    for name, case in cases.items():  # first calls: compile (or the persistent cache), and each case's tokens
        t0 = time.perf_counter()
        outputs[name] = np.asarray(case())
        out['first_call_s'][name] = time.perf_counter() - t0
    for _ in range(rounds):
        for name, case in cases.items():
            t0, c0 = time.perf_counter(), time.process_time()
            np.asarray(case())
            out['runs'][name].append(time.perf_counter() - t0)
            out['cpu_runs'][name].append(time.process_time() - c0)
    nine_default = [SampleRequest(texts[0], masks[0], nine, settings)]
    chunks = {
        'baseline': chunk_runner(old_sampling, old_weights, config, nine_default, uncond, uncond_mask),
        'new': chunk_runner(sampling, weights, config, nine_default, uncond, uncond_mask),
        'uniform': chunk_runner(sampling, weights, config, jobs([settings] * 3), uncond, uncond_mask),
        'mixed': chunk_runner(sampling, weights, config, jobs(knobs), uncond, uncond_mask),
    }
    for run in chunks.values():
        run()  # compiles
    out['chunk_ms_per_step'] = {name: [] for name in chunks}
    for _ in range(chunk_repeats):
        for name, run in chunks.items():
            t0 = time.perf_counter()
            run()
            out['chunk_ms_per_step'][name].append((time.perf_counter() - t0) * 1000 / 32)
    out['tokens_equal_baseline'] = bool(np.array_equal(outputs['baseline'], outputs['new']))
    out['previews_change_nothing'] = bool(np.array_equal(outputs['previews'][0], outputs['new'][0]))
    out['variation_keeps_rows'] = bool((outputs['variation'][0][:, : 12 * 16] == outputs['new'][0, 0, : 12 * 16]).all())
    out['peak_rss_gb'] = peak_rss_gb()
    return out


def chunk_runner(sampling: Any, weights: Any, config: Any, requests: list, uncond: Any, uncond_mask: Any) -> Any:
    """A function that runs one 32-step decode chunk at the full cache (positions 192–223) and waits for it.

    Sampling's own compiled pieces, started once: the chunk is what a knob or a forced token adds to,
    and 32 steps (a few seconds) are short enough to interleave the cases many times on a busy CPU.
    `sampling` is ours or a baseline's: before `RowControls` it took its knobs as scalars.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    steps, length = 32, config.image_length
    codebook, dtype = weights.decoder.lm_head.shape[1], weights.decoder.lm_head.dtype
    at = length - 2 * steps  # a new index array each call: the state, index included, is donated
    if hasattr(sampling, 'RowControls'):
        batch = sampling.lay_out(requests, config, uncond, uncond_mask, codebook)
        inputs = (batch.texts, batch.masks, batch.prompt_index, batch.twin_index, batch.seeds)
        dynamic = (jax.device_put(batch.controls),)
        static = dict(use_top_p=batch.use_top_p, codebook_count=codebook)
    else:  # one prompt, uniform knobs: (temperature, scale, top-p) dynamic, top-k static
        (request,) = requests
        rows = sampling.bucket_size(request.candidate_count)
        texts, masks = np.stack([uncond, request.text_ids]), np.stack([uncond_mask, request.text_mask])
        prompt_index, seeds = np.zeros(rows, np.int32), np.zeros(rows, np.uint32)
        prompt_index[: request.candidate_count], seeds[: request.candidate_count] = 1, request.seeds
        inputs = (texts, masks, prompt_index, seeds)  # texts: the empty prompt and this one, prompt bucket 2
        knobs = request.settings
        dynamic = (jnp.float32(knobs.temperature), jnp.float32(knobs.cond_scale), None)
        static = dict(top_k=knobs.top_k, codebook_count=codebook)
    state = [sampling._start_jit(weights, *inputs, config=config, dtype=dtype, cache_length=length)]

    def run() -> None:
        state[0], tokens = sampling._decode_jit(
            weights, state[0].replace(index=jnp.array(at, jnp.int32)), *dynamic, config=config, step_count=steps, **static
        )[:2]
        tokens.block_until_ready()

    return run


def print_sampler(result: dict[str, Any], args: argparse.Namespace, dtype: str) -> None:
    best = {name: min(times) for name, times in result['runs'].items()}
    cpu = {name: min(times) for name, times in result['cpu_runs'].items()}
    load = os.getloadavg()
    print(f'# sampler, {args.model}, {args.device}, {dtype}, top-k {TOP_K}, cond scale {COND_SCALE}, {PROMPT_TOKENS} prompt')
    print(f'# tokens, best of {args.rounds} alternating rounds; baseline = commit {result["baseline"]}')
    print(f'# load average now {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}')
    print('{:>34} {:>8} {:>8} {:>8}  {}'.format('case', 'best s', 'CPU s', 'first s', 'all rounds s'))
    labels = {
        'baseline': 'nine, default knobs, baseline',
        'new': 'nine, default knobs',
        'uniform': 'three jobs of three, uniform',
        'mixed': 'three jobs of three, mixed knobs',
        'previews': 'nine, previews every chunk',
        'variation': 'nine, 12 of 16 rows kept',
    }
    for name, label in labels.items():
        rounds = ' '.join(f'{t:.2f}' for t in result['runs'][name])
        print(f'{label:>34} {best[name]:>8.2f} {cpu[name]:>8.2f} {result["first_call_s"][name]:>8.2f}  {rounds}')

    def ratio(name: str, reference: str, target: float | None = None) -> str:
        wall, on_cpu = best[name] / best[reference], cpu[name] / cpu[reference]
        verdict = f' (target <= {target}): {"PASS" if max(wall, on_cpu) <= target else "FAIL"}' if target else ''
        return f'{wall:.3f} wall, {on_cpu:.3f} CPU{verdict}'

    steps = {name: min(times) for name, times in result['chunk_ms_per_step'].items()}
    repeats = len(result['chunk_ms_per_step']['new'])
    print(f'one 32-step chunk at the full cache, best of {repeats} interleaved, ms per step:')
    print('  ' + ', '.join(f'{labels[name]}: {ms:.1f}' for name, ms in steps.items()))
    per_step = steps['new'] / steps['baseline'], steps['mixed'] / steps['uniform']
    print(f'  per step: default knobs / baseline {per_step[0]:.3f}, mixed knobs / uniform {per_step[1]:.3f}')
    print(f'default knobs / baseline: {ratio("new", "baseline", 1.05)}')
    print(f'mixed knobs / uniform: {ratio("mixed", "uniform", 1.1)}')
    print(f'previews on / off: {ratio("previews", "new")}')
    print(f'variation (12 rows kept) / nine from scratch: {ratio("variation", "new")}')
    print(
        f'tokens equal to the baseline: {result["tokens_equal_baseline"]}; previews change nothing: '
        f'{result["previews_change_nothing"]}; the variation keeps its rows: {result["variation_keeps_rows"]}'
    )
    print(f'peak memory: RSS {result["peak_rss_gb"]:.2f} GB')


def run_min_dalle(model: str, device: str, counts: list[int], dtype_name: str, threads: int = 0) -> dict[str, Any]:
    import torch
    from min_dalle import MinDalle
    from min_dalle.models import DalleBartDecoder, DalleBartEncoder, VQGanDetokenizer

    from edalle.config import BART_CONFIGS

    stages: dict[str, float] = {'imports': rss_gb()}
    torch.set_num_threads(threads or os.cpu_count() or 1)
    config = BART_CONFIGS[model]  # min-dalle builds the same sizes from these numbers
    sizes = dict(
        layer_count=config.encoder_layers,
        embed_count=config.d_model,
        attention_head_count=config.encoder_attention_heads,
        glu_embed_count=config.encoder_ffn_dim,
    )
    dtype = getattr(torch, dtype_name)
    started = time.perf_counter()
    # MinDalle() downloads its weights in __init__; build the same object around random modules.
    dalle = MinDalle.__new__(MinDalle)
    dalle.is_mega, dalle.is_reusable, dalle.is_verbose = model == 'mega', True, False
    dalle.device, dalle.dtype = device, dtype
    dalle.text_token_count, dalle.layer_count, dalle.embed_count = 64, sizes['layer_count'], sizes['embed_count']
    # built on the device itself: a GPU initialises mega's 2.6 B random parameters in a moment, a CPU in a minute
    with torch.device(device):
        dalle.encoder = (
            DalleBartEncoder(text_token_count=64, text_vocab_count=config.encoder_vocab_size, device=device, **sizes)
            .to(dtype)
            .eval()
        )
        # min-dalle starts every image from token 16383, so its vocabulary must reach it (only tiny is smaller)
        vocab = max(config.image_vocab_size, 2**14)
        dalle.decoder = DalleBartDecoder(image_vocab_count=vocab, device=device, **sizes).to(dtype).eval()
        dalle.detokenizer = VQGanDetokenizer().eval()

    class FixedTokens:  # its BPE files also come from the hub; the prompt length is what matters
        def tokenize(self, text: str, is_verbose: bool = False) -> list[int]:
            return [0] + [4 + i for i in range(PROMPT_TOKENS - 2)] + [2]

    dalle.tokenizer = FixedTokens()
    setup = time.perf_counter() - started
    stages['models built'] = rss_gb()
    out: dict[str, Any] = {'side': 'min-dalle', 'setup_s': setup, 'dtype': dtype_name, 'runs': {}}
    for n in counts:
        grid = round(n**0.5)
        assert grid * grid == n, 'min-dalle draws square grids only'

        def generate(grid: int = grid) -> float:
            t0 = time.perf_counter()
            with torch.inference_mode():
                for _ in dalle.generate_raw_image_stream(
                    'x', seed=SEED, grid_size=grid, top_k=TOP_K, supercondition_factor=int(COND_SCALE)
                ):
                    pass
            if device == 'cuda':
                torch.cuda.synchronize()
            return time.perf_counter() - t0

        first = generate() if device == 'cuda' else None  # CUDA warm-up (cuBLAS handles, autotune)
        total = generate()
        out['runs'][n] = {'first_call_s': first, 'total_s': total, 'tokens_per_s': n * 256 / total}
        stages[f'{n} timed call'] = rss_gb()
    out['peak_rss_gb'] = peak_rss_gb()
    out['rss_gb'] = stages
    if device == 'cuda':
        out['torch_peak_gpu_gb'] = torch.cuda.max_memory_allocated() / 2**30
    return out


def child(side: str, args: argparse.Namespace, counts: str, dtype: str, cache: str, checkpoint: str) -> dict[str, Any]:
    command = [sys.executable, __file__, '--side', side, '--model', args.model, '--device', args.device]
    command += ['--counts', counts, '--dtype', dtype, '--min-dalle-dtype', dtype, '--checkpoint', checkpoint]
    command += ['--rank'] if args.rank and side == 'edalle' else []
    command += ['--torch-threads', str(args.torch_threads)]
    env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': cache}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        sys.exit(f'{side} failed:\n{done.stderr[-4000:]}')
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result), file=sys.stderr, flush=True)  # each side as it finishes: a cut-short run still tells
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', choices=('mini', 'mega', 'tiny'), default='mini', help='tiny: a smoke run of the script')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--counts', default='1,9', help='edalle candidates per run, comma-separated')
    parser.add_argument('--min-dalle-counts', default='1', help="min-dalle's (square numbers); the targets need only 1")
    parser.add_argument('--rounds', type=int, default=2, help='sides alternate A B A B; the best round of each counts')
    parser.add_argument('--dtype', default=None, help='edalle compute dtype (default float32 on CPU, bfloat16 on GPU)')
    parser.add_argument('--min-dalle-dtype', default=None, help='min-dalle dtype (default float32 on CPU, float16 on GPU)')
    parser.add_argument('--sampler', action='store_true', help='the sampler alone, against --baseline-commit (see above)')
    parser.add_argument('--baseline-commit', default='558c039', help="--sampler's baseline: a commit of this repository")
    parser.add_argument('--chunk-repeats', type=int, default=8, help='--sampler: interleaved timings of one 32-step chunk')
    parser.add_argument(
        '--torch-threads', type=int, default=0, help="torch's CPU threads on both sides (0: every CPU, as before)"
    )
    parser.add_argument('--side', choices=('edalle', 'min-dalle', 'checkpoint', 'sampler'), help=argparse.SUPPRESS)
    parser.add_argument('--checkpoint', help=argparse.SUPPRESS)
    parser.add_argument('--json', action='store_true', help='print the raw results as JSON too')
    parser.add_argument(
        '--rank', action='store_true', help='also CLIP-rank ours after the timed runs; its cost is reported apart'
    )
    args = parser.parse_args()
    ours_dtype = args.dtype or ('float32' if args.device == 'cpu' else 'bfloat16')
    theirs_dtype = args.min_dalle_dtype or ('float32' if args.device == 'cpu' else 'float16')

    if args.side == 'checkpoint':
        write_checkpoint(args.model, args.checkpoint)
        return
    if args.side:  # child process: one side, results as JSON on the last line
        if args.side == 'sampler':
            result = run_sampler(
                args.model, args.device, args.dtype, args.checkpoint, args.rounds, args.baseline_commit, args.chunk_repeats
            )
        elif args.side == 'edalle':
            if args.torch_threads:
                import torch

                torch.set_num_threads(args.torch_threads)  # the VQGAN decode and CLIP; XLA keeps its own threads
            cache = os.environ.get('JAX_COMPILATION_CACHE_DIR')
            if cache:
                import jax

                jax.config.update('jax_compilation_cache_dir', cache)
                jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
            counts = [int(c) for c in args.counts.split(',')]
            result = run_ours(args.model, args.device, counts, args.dtype, args.checkpoint, args.rank)
        else:
            counts = [int(c) for c in args.counts.split(',')]
            result = run_min_dalle(args.model, args.device, counts, args.min_dalle_dtype, args.torch_threads)
        print(json.dumps(result))
        return

    import shutil
    import tempfile

    cache = tempfile.mkdtemp(prefix='edalle-bench-jax-')  # cold in round 1: its first call is a real compile
    scratch = tempfile.mkdtemp(prefix='edalle-bench-weights-')
    checkpoint = os.path.join(scratch, 'flax_model.msgpack')
    rounds: list[dict[str, Any]] = []
    try:
        write = [sys.executable, __file__, '--side', 'checkpoint', '--model', args.model, '--checkpoint', checkpoint]
        if subprocess.run(write, check=False).returncode != 0:
            sys.exit('writing the random-weight checkpoint failed')
        if args.sampler:
            command = [sys.executable, __file__, '--side', 'sampler', '--model', args.model, '--device', args.device]
            command += ['--dtype', ours_dtype, '--checkpoint', checkpoint, '--rounds', str(args.rounds)]
            command += ['--baseline-commit', args.baseline_commit, '--chunk-repeats', str(args.chunk_repeats)]
            done = subprocess.run(
                command, capture_output=True, text=True, check=False, env={**os.environ, 'JAX_COMPILATION_CACHE_DIR': cache}
            )
            if done.returncode != 0:
                sys.exit(f'sampler failed:\n{done.stderr[-4000:]}')
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print_sampler(result, args, ours_dtype)
            if args.json:
                print(json.dumps(result, indent=1))
            return
        for _ in range(args.rounds):  # alternate, so load from other processes hits both sides alike
            rounds.append(
                {
                    'edalle': child('edalle', args, args.counts, ours_dtype, cache, checkpoint),
                    'min-dalle': child('min-dalle', args, args.min_dalle_counts, theirs_dtype, cache, checkpoint),
                }
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)

    def best(side: str, n: str, key: str) -> float:
        return min(r[side]['runs'][n][key] for r in rounds)

    counts = args.counts.split(',')
    reference = best('min-dalle', '1', 'total_s') if '1' in args.min_dalle_counts.split(',') else None
    compile_s = {n: rounds[0]['edalle']['runs'][n]['compile_s'] for n in counts}
    load = os.getloadavg()
    print(f'# generation, {args.model}, {args.device}, edalle {ours_dtype} vs min-dalle {theirs_dtype}, top-k {TOP_K},')
    print(f'# cond scale {COND_SCALE}, {PROMPT_TOKENS} prompt tokens, best of {args.rounds} alternating rounds;')
    print(f'# load average now {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}')
    header = ('candidates', 'edalle s', '= sample + decode', 'compile s', 'tokens/s', 'min-dalle s')
    print('{:>10} {:>9} {:>18} {:>10} {:>9} {:>12}'.format(*header))
    for n in counts:
        sample, decode = best('edalle', n, 'sample_s'), best('edalle', n, 'decode_s')
        theirs = best('min-dalle', n, 'total_s') if n in args.min_dalle_counts.split(',') else float('nan')
        print(
            f'{n:>10} {best("edalle", n, "total_s"):>9.2f} {sample:>9.2f} + {decode:<6.2f} {compile_s[n]:>10.2f} '
            f'{int(n) * 256 / sample:>9.1f} {theirs:>12.2f}'
        )
    if reference:
        if '1' in counts:
            ratio = best('edalle', '1', 'total_s') / reference
            print(f'one candidate, edalle / min-dalle: {ratio:.3f} (target <= 0.67): {"PASS" if ratio <= 0.67 else "FAIL"}')
        if '9' in counts:
            ratio = best('edalle', '9', 'total_s') / reference
            print(f'nine candidates vs min-dalle ONE: {ratio:.3f} (target <= 1.0): {"PASS" if ratio <= 1.0 else "FAIL"}')
    if '9' in counts and '9' in args.min_dalle_counts.split(','):  # a 3×3 grid each (the GPU target: ≤ 0.5)
        ratio = best('edalle', '9', 'total_s') / best('min-dalle', '9', 'total_s')
        print(f'nine candidates, edalle / min-dalle nine: {ratio:.3f} (target on a GPU <= 0.5): {verdict(ratio, 0.5)}')
    if args.rank and '9' in counts:  # what a member waits for once compiled: sampling + decode + CLIP ranking
        grid = min(r['edalle']['runs']['9']['total_s'] + r['edalle']['rank']['runs']['9']['rank_s'] for r in rounds)
        target = GRID_TARGET_S.get(args.model) if args.device == 'cuda' else None
        aim = f' (target on one H100 <= {target:g} s): {verdict(grid, target)}' if target else ''
        print(f'3x3 grid with ranking: {grid:.2f} s{aim}')
    peaks = {}
    for side in ('edalle', 'min-dalle'):
        peaks[side] = max(r[side]['peak_rss_gb'] for r in rounds)
        gpu = {k: round(v, 2) for k, v in rounds[-1][side].items() if k.endswith('gpu_gb')}
        print(f'peak memory {side}: RSS {peaks[side]:.2f} GB' + (f', GPU {gpu}' if gpu else ''))
    print(f'peak RSS, edalle / min-dalle (ranking off): {peaks["edalle"] / peaks["min-dalle"]:.3f}')
    if args.rank:
        rank = rounds[-1]['edalle']['rank']
        times = ', '.join(f'{n}: {min(r["edalle"]["rank"]["runs"][n]["rank_s"] for r in rounds):.3f} s' for n in counts)
        print(
            f'ranking (CLIP, after the runs): load {rank["clip_load_s"]:.2f} s, score {times}; '
            f'RSS {rank["rss_before_gb"]:.2f} -> peak {rank["peak_gb"]:.2f} GB (adds {rank["adds_gb"]:.2f} GB)'
        )
    stages = rounds[-1]['edalle']['rss_gb']
    print('edalle RSS by stage, GB: ' + ', '.join(f'{k} {v:.2f}' for k, v in stages.items()))
    stages = rounds[-1]['min-dalle'].get('rss_gb', {})
    print('min-dalle RSS by stage, GB: ' + ', '.join(f'{k} {v:.2f}' for k, v in stages.items()))
    if args.json:
        print(json.dumps(rounds, indent=1))


if __name__ == '__main__':
    main()
