"""Sampling 256 image tokens from DalleBart: super-conditioning, filtering, compiled loops.

The shape of a call: M prompts × N candidates are decoded together. The encoder runs once
per prompt plus once for the unconditional prompt; the decoder batch is 2·M·N rows (the
conditional rows, then their unconditional twins) that share one key/value cache, decoded
by `lax.scan` in chunks of 32 tokens (`bart_decode.decode_step` is one token). Every
candidate samples with its own PRNG key derived from its seed and the step index, so a
prompt + seed + settings gives the same tokens whatever else is in the batch. Batches are
padded to a few bucket sizes so a new batch size rarely recompiles.

The filters are pure functions on logits, tested on hand-made arrays; `sample_loop` takes
any `tokens_to_logits`, so it is tested with a fake model (flax lm1b's temperature_sampler).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from edalle.config import BartConfig
from edalle.models.bart import encode
from edalle.models.bart_decode import (
    DecodeCache,
    DecoderWeights,
    decode_step,
    grow_cache,
    on_device,
    prepare_decoder,
    start_cache,
)

# Candidate rows are padded to one of these (one compile each); 9 is the bot's default 3 × 3 grid.
# Beyond the last, batches round up to a multiple of it.
ROW_BUCKETS = (1, 2, 4, 9, 16, 32, 64)
PROMPT_BUCKETS = (2, 4, 8, 16, 32, 64)  # prompts + the unconditional one; the encoder is cheap
# The self-attention cache grows in steps of this many positions (`bart_decode.grow_cache`):
# four compiled decode loops (cache 64, 128, 192, 256) read on average 5/8 of the whole cache.
CACHE_GROWTH = 64


@dataclass(frozen=True)
class SamplingSettings:
    top_k: int | None = 50  # the effective default of dalle-mini (transformers' generation default)
    top_p: float | None = None
    temperature: float = 1.0
    cond_scale: float = 10.0  # dalle-mini's super-conditioning scale

    def __post_init__(self) -> None:
        assert self.top_k is None or self.top_k >= 1, 'top_k must be at least 1'
        assert self.top_p is None or 0.0 < self.top_p <= 1.0, 'top_p must be in (0, 1]'
        assert self.temperature > 0.0, 'temperature must be positive'


def superconditioned_logits(cond: jax.Array, uncond: jax.Array, cond_scale: float | jax.Array) -> jax.Array:
    """Push the conditional logits away from the unconditional ones: uncond + s·(cond − uncond)."""
    return uncond + cond_scale * (cond - uncond)


def ordered_keys(x: jax.Array) -> jax.Array:
    """float32 → uint32 with the same order (IEEE bits, negatives flipped): exact to compare and bisect."""
    x = jnp.where(x == 0, 0.0, x).astype(jnp.float32)  # -0.0 and 0.0 are equal as floats, so one key
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def kth_largest_key(keys: jax.Array, k: int) -> jax.Array:
    """The k-th largest of each row of `ordered_keys` (B, V) → (B, 1), by bisection on the key.

    32 counting passes over the row instead of a sort: on CPU, `lax.top_k` sorts every row
    (≈2.4 ms per row of 16,384 logits, as long as the rest of a decode step for 9 rows).
    Invariant: at least k keys are ≥ `low`; the answer is the largest such value.
    """
    low = jnp.zeros(keys.shape[:-1] + (1,), jnp.uint32)
    high = jnp.full_like(low, 0xFFFFFFFF)

    def narrow(_, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        low, high = bounds
        mid = high - (high - low) // 2  # the upper middle, without overflow
        enough = jnp.sum(keys >= mid, axis=-1, keepdims=True) >= k
        return jnp.where(enough, mid, low), jnp.where(enough, high, mid - 1)

    return jax.lax.fori_loop(0, 32, narrow, (low, high))[0]


def apply_top_k(logits: jax.Array, top_k: int | None) -> jax.Array:
    """Keep the k largest logits per row (and any ties with the k-th); the rest become -inf."""
    if top_k is None or top_k >= logits.shape[-1]:
        return logits
    keys = ordered_keys(logits)
    return jnp.where(keys >= kth_largest_key(keys, top_k), logits, -jnp.inf)


def apply_top_p(logits: jax.Array, top_p: float | jax.Array) -> jax.Array:
    """Nucleus filter: keep the smallest set of top logits whose probability reaches top_p.

    A token is kept when the probability mass ranked above it is below top_p, so the most
    likely token always survives. Ties with the last kept logit are kept too.
    """
    sorted_logits = -jnp.sort(-logits, axis=-1)  # (B, V) descending
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_above = jnp.cumsum(probs, axis=-1) - probs
    threshold = jnp.min(jnp.where(mass_above < top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def filtered_logits(logits: jax.Array, top_k: int | None, top_p, temperature) -> jax.Array:
    """Temperature, then top-k, then top-p (transformers' warper order); top_p None skips it."""
    logits = apply_top_k(logits / temperature, top_k)
    return logits if top_p is None else apply_top_p(logits, top_p)


@struct.dataclass
class DecodeState:
    index: jax.Array  # () int32: the position the next step writes
    prev_token: jax.Array  # (B,) int32: the token fed at `index`
    keys: jax.Array  # (B, 2) uint32: one PRNG key per candidate, from its seed
    model: Any  # what `tokens_to_logits` threads through, here the KV cache


TokensToLogits = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]


def sample_loop(
    tokens_to_logits: TokensToLogits,
    state: DecodeState,
    step_count: int,
    *,
    top_k: int | None,
    top_p,
    temperature,
    cond_scale,
    codebook_count: int,
) -> tuple[DecodeState, jax.Array]:
    """Run `step_count` steps; returns the new state and the sampled tokens (B, step_count).

    `tokens_to_logits(model, tokens (2B,), index) -> (logits (2B, V), model)` sees each
    previous token twice: conditional rows first, then the unconditional rows.
    """

    def step(state: DecodeState, _) -> tuple[DecodeState, jax.Array]:
        row_count = state.prev_token.shape[0]
        tokens = jnp.concatenate([state.prev_token, state.prev_token])  # (2B,)
        logits, model = tokens_to_logits(state.model, tokens, state.index)
        logits = logits[:, :codebook_count].astype(jnp.float32)  # (2B, K)
        logits = superconditioned_logits(logits[:row_count], logits[row_count:], cond_scale)  # (B, K)
        logits = filtered_logits(logits, top_k, top_p, temperature)
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(state.keys, state.index)
        token = jax.vmap(jax.random.categorical)(step_keys, logits).astype(jnp.int32)  # (B,)
        return state.replace(index=state.index + 1, prev_token=token, model=model), token

    state, tokens = jax.lax.scan(step, state, None, length=step_count)
    return state, tokens.T


@struct.dataclass
class SamplerWeights:
    """What sampling reads: the encoder's Flax parameters and the decoder prepared for speed."""

    encoder: dict  # {'model': {'encoder': …}}, the published subtree
    decoder: DecoderWeights


def prepare_sampler(params: dict, config: BartConfig, dtype: Any = jnp.float32, *, release: bool = False) -> SamplerWeights:
    """Split a published DalleBart parameter tree once per loaded model (see `bart_decode`).

    `params` may hold numpy arrays (`bart_checkpoint.read_params`); the encoder's leaves
    become jax arrays in their stored dtype. `release` empties `params` along the way
    (see `prepare_decoder`), which is how `Engine.load` keeps one copy of the weights.
    """
    decoder = prepare_decoder(params, config, dtype, release=release)
    encoder = params['model'].pop('encoder') if release else params['model']['encoder']
    return SamplerWeights(encoder={'model': {'encoder': _on_device(encoder, in_place=release)}}, decoder=decoder)


def _on_device(tree: dict, *, in_place: bool) -> dict:
    """The tree's leaves as jax arrays; `in_place` swaps them one at a time (each host copy goes as its device one comes)."""
    out = tree if in_place else {}
    for key, value in tree.items():
        out[key] = _on_device(value, in_place=in_place) if isinstance(value, dict) else on_device(value)
    return out


def _start(
    weights: SamplerWeights, text_ids, text_mask, prompt_index, seeds, *, config: BartConfig, dtype, cache_length: int
) -> DecodeState:
    """Encode the prompts once (row 0 is the unconditional one) and lay out the decoder batch."""
    encoder_state = encode(weights.encoder, config, text_ids, text_mask, dtype)  # (P, Te, D)
    row_count = prompt_index.shape[0]
    row_prompt = jnp.concatenate([prompt_index, jnp.zeros_like(prompt_index)])  # conditional rows, then twins
    return DecodeState(
        index=jnp.array(0, jnp.int32),
        prev_token=jnp.full((row_count,), config.decoder_start_token_id, jnp.int32),
        keys=jax.vmap(jax.random.PRNGKey)(seeds),
        model=start_cache(weights.decoder, config, encoder_state, text_mask, row_prompt, cache_length),
    )


def _decode(
    weights: SamplerWeights, state: DecodeState, temperature, cond_scale, top_p, *, config, step_count, top_k, codebook_count
):
    def tokens_to_logits(cache: DecodeCache, tokens: jax.Array, index: jax.Array) -> tuple[jax.Array, DecodeCache]:
        return decode_step(weights.decoder, config, cache, tokens, index)

    settings = dict(top_k=top_k, top_p=top_p, temperature=temperature, cond_scale=cond_scale)
    return sample_loop(tokens_to_logits, state, step_count, codebook_count=codebook_count, **settings)


def _grow(state: DecodeState, *, length: int) -> DecodeState:
    return state.replace(model=grow_cache(state.model, length))


_start_jit = jax.jit(_start, static_argnames=('config', 'dtype', 'cache_length'))
# the state is donated: its cache is updated in place instead of copied at every call
_decode_jit = jax.jit(_decode, static_argnames=('config', 'step_count', 'top_k', 'codebook_count'), donate_argnums=1)
_grow_jit = jax.jit(_grow, static_argnames='length')


def bucket_size(count: int, buckets: tuple[int, ...] = ROW_BUCKETS) -> int:
    """The padded batch size: the smallest bucket that fits, or the next multiple of the largest."""
    for bucket in buckets:
        if count <= bucket:
            return bucket
    return -(-count // buckets[-1]) * buckets[-1]


def generate_image_tokens(
    weights: SamplerWeights,
    config: BartConfig,
    text_ids: np.ndarray,
    text_mask: np.ndarray,
    uncond_ids: np.ndarray,
    uncond_mask: np.ndarray,
    seeds: Sequence[int] | np.ndarray,
    candidates_per_prompt: int,
    settings: SamplingSettings = SamplingSettings(),
    *,
    codebook_count: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_token_count: int = 32,
) -> np.ndarray:
    """Image tokens (M, N, 256) int32 for text ids (M, 64) with N candidates each.

    `weights` come from `prepare_sampler` (once per loaded model); they fix the compute dtype.
    `seeds` holds one int per candidate, shape (M, N) or (M·N,), taken modulo 2**32.
    Decoding runs in chunks of `chunk_token_count` tokens, the cache staying on the device;
    `progress(tokens_done, 256)` is called after each chunk.
    """
    text_ids, text_mask = np.asarray(text_ids), np.asarray(text_mask)
    prompt_count, candidate_count = text_ids.shape[0], candidates_per_prompt
    row_count = prompt_count * candidate_count
    seeds = (np.asarray(seeds, np.int64).reshape(row_count) & 0xFFFFFFFF).astype(np.uint32)
    codebook_count = codebook_count or weights.decoder.lm_head.shape[1]  # the drawable codes

    prompt_bucket, row_bucket = bucket_size(prompt_count + 1, PROMPT_BUCKETS), bucket_size(row_count)
    texts = np.full((prompt_bucket, config.max_text_length), config.pad_token_id, np.int32)
    masks = np.zeros((prompt_bucket, config.max_text_length), np.int32)
    texts[0], masks[0] = uncond_ids, uncond_mask
    texts[1 : prompt_count + 1], masks[1 : prompt_count + 1] = text_ids, text_mask
    prompt_index = np.zeros(row_bucket, np.int32)
    prompt_index[:row_count] = 1 + np.repeat(np.arange(prompt_count), candidate_count)
    padded_seeds = np.zeros(row_bucket, np.uint32)
    padded_seeds[:row_count] = seeds

    top_p = None if settings.top_p is None else jnp.float32(settings.top_p)
    dynamic = (jnp.float32(settings.temperature), jnp.float32(settings.cond_scale), top_p)
    static = dict(config=config, top_k=settings.top_k, codebook_count=codebook_count)
    assert config.image_length % chunk_token_count == 0, 'chunks must tile the image'

    def cache_length(done: int) -> int:  # room for the positions written by the chunk ending at `done`
        return min(-(-done // CACHE_GROWTH) * CACHE_GROWTH, config.image_length)

    dtype = weights.decoder.lm_head.dtype
    inputs = (weights, texts, masks, prompt_index, padded_seeds)
    state = _start_jit(*inputs, config=config, dtype=dtype, cache_length=cache_length(chunk_token_count))
    chunks = []
    for done in range(chunk_token_count, config.image_length + 1, chunk_token_count):
        if state.model.keys[0].shape[2] < cache_length(done):
            state = _grow_jit(state, length=cache_length(done))
        state, chunk = _decode_jit(weights, state, *dynamic, step_count=chunk_token_count, **static)
        chunks.append(chunk)
        if progress is not None:
            chunk.block_until_ready()  # so progress reports finished work
            progress(done, config.image_length)
    tokens = np.concatenate([np.asarray(chunk) for chunk in chunks], axis=1)[:row_count]  # (M·N, 256)
    return tokens.reshape(prompt_count, candidate_count, config.image_length)
