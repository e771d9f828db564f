"""Sampling 256 image tokens from DalleBart: super-conditioning, filtering, one compiled loop.

The shape of a call: M prompts × N candidates are decoded together. The encoder runs once
per prompt plus once for the unconditional prompt; the decoder batch is 2·M·N rows (the
conditional rows, then their unconditional twins) that share one key/value cache in a
single `lax.scan`. Every candidate samples with its own PRNG key derived from its seed and
the step index, so a prompt + seed + settings gives the same tokens whatever else is in the
batch. Batches are padded to a few bucket sizes so a new batch size rarely recompiles.

The filters are pure functions on logits, tested on hand-made arrays; `sample_loop` takes
any `tokens_to_logits`, so it is tested with a fake model (flax lm1b's temperature_sampler).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from edalle.config import BartConfig
from edalle.models.bart import DalleBart, cross_attention_kv, encode

CODEBOOK_COUNT = 2**14  # VQGAN f16-16384 codes; mega's extra 31 logits are never drawn
# Candidate rows are padded to one of these (one compile each); 9 is the bot's default 3 × 3 grid.
# Beyond the last, batches round up to a multiple of it.
ROW_BUCKETS = (1, 2, 4, 9, 16, 32, 64)
PROMPT_BUCKETS = (2, 4, 8, 16, 32, 64)  # prompts + the unconditional one; the encoder is cheap


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


def apply_top_k(logits: jax.Array, top_k: int | None) -> jax.Array:
    """Keep the k largest logits per row (and any ties with the k-th); the rest become -inf."""
    if top_k is None or top_k >= logits.shape[-1]:
        return logits
    threshold = jax.lax.top_k(logits, top_k)[0][..., -1:]  # (B, 1)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


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
class KVCache:
    keys: jax.Array  # (L, 2B, S, H, C) self-attention keys of the positions written so far
    values: jax.Array
    cross_keys: jax.Array  # (L, 2B, Te, H, C) fixed for the whole image
    cross_values: jax.Array
    encoder_mask: jax.Array  # (2B, Te)


def _start(params, text_ids, text_mask, prompt_index, seeds, *, config: BartConfig, dtype) -> DecodeState:
    """Encode the prompts once (row 0 is the unconditional one) and lay out the decoder batch."""
    encoder_state = encode(params, config, text_ids, text_mask, dtype)  # (P, Te, D)
    cond_state, cond_mask = encoder_state[prompt_index], text_mask[prompt_index]  # (B, Te, D)
    row_count = prompt_index.shape[0]
    uncond_state = jnp.broadcast_to(encoder_state[:1], cond_state.shape)
    uncond_mask = jnp.broadcast_to(text_mask[:1], cond_mask.shape)
    states = jnp.concatenate([cond_state, uncond_state])  # (2B, Te, D)
    cross_keys, cross_values = cross_attention_kv(params, config, states, dtype)
    heads = config.decoder_attention_heads
    shape = (config.decoder_layers, 2 * row_count, config.image_length, heads, config.d_model // heads)
    cache = KVCache(
        keys=jnp.zeros(shape, dtype),
        values=jnp.zeros(shape, dtype),
        cross_keys=cross_keys,
        cross_values=cross_values,
        encoder_mask=jnp.concatenate([cond_mask, uncond_mask]),
    )
    return DecodeState(
        index=jnp.array(0, jnp.int32),
        prev_token=jnp.full((row_count,), config.decoder_start_token_id, jnp.int32),
        keys=jax.vmap(jax.random.PRNGKey)(seeds),
        model=cache,
    )


def _decode(params, state: DecodeState, temperature, cond_scale, top_p, *, config, dtype, step_count, top_k, codebook_count):
    module = DalleBart(config, dtype)

    def tokens_to_logits(cache: KVCache, tokens: jax.Array, index: jax.Array) -> tuple[jax.Array, KVCache]:
        logits, (keys, values) = module.apply(
            {'params': params},
            tokens[:, None],
            index,
            cache=(cache.keys, cache.values),
            cross_kv=(cache.cross_keys, cache.cross_values),
            encoder_mask=cache.encoder_mask,
            method=DalleBart.decode,
        )  # (2B, 1, V), (L, 2B, 1, H, C)
        at = (0, 0, index, 0, 0)
        cache = cache.replace(
            keys=jax.lax.dynamic_update_slice(cache.keys, keys, at),
            values=jax.lax.dynamic_update_slice(cache.values, values, at),
        )
        return logits[:, 0], cache

    settings = dict(top_k=top_k, top_p=top_p, temperature=temperature, cond_scale=cond_scale)
    return sample_loop(tokens_to_logits, state, step_count, codebook_count=codebook_count, **settings)


_STATIC = ('config', 'dtype')
_DECODE_STATIC = _STATIC + ('step_count', 'top_k', 'codebook_count')
_start_jit = jax.jit(_start, static_argnames=_STATIC)
_decode_jit = jax.jit(_decode, static_argnames=_DECODE_STATIC)


@partial(jax.jit, static_argnames=_DECODE_STATIC)
def _generate_jit(params, text_ids, text_mask, prompt_index, seeds, temperature, cond_scale, top_p, **static):
    state = _start(params, text_ids, text_mask, prompt_index, seeds, config=static['config'], dtype=static['dtype'])
    return _decode(params, state, temperature, cond_scale, top_p, **static)[1]


def bucket_size(count: int, buckets: tuple[int, ...] = ROW_BUCKETS) -> int:
    """The padded batch size: the smallest bucket that fits, or the next multiple of the largest."""
    for bucket in buckets:
        if count <= bucket:
            return bucket
    return -(-count // buckets[-1]) * buckets[-1]


def generate_image_tokens(
    params: dict,
    config: BartConfig,
    text_ids: np.ndarray,
    text_mask: np.ndarray,
    uncond_ids: np.ndarray,
    uncond_mask: np.ndarray,
    seeds: Sequence[int] | np.ndarray,
    candidates_per_prompt: int,
    settings: SamplingSettings = SamplingSettings(),
    dtype: Any = jnp.float32,
    *,
    codebook_count: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_token_count: int = 32,
) -> np.ndarray:
    """Image tokens (M, N, 256) int32 for text ids (M, 64) with N candidates each.

    `seeds` holds one int per candidate, shape (M, N) or (M·N,), taken modulo 2**32.
    With `progress`, decoding runs in chunks of `chunk_token_count` tokens and calls
    `progress(tokens_done, 256)` between chunks; the cache stays on the device.
    """
    text_ids, text_mask = np.asarray(text_ids), np.asarray(text_mask)
    prompt_count, candidate_count = text_ids.shape[0], candidates_per_prompt
    row_count = prompt_count * candidate_count
    seeds = (np.asarray(seeds, np.int64).reshape(row_count) & 0xFFFFFFFF).astype(np.uint32)
    codebook_count = codebook_count or min(CODEBOOK_COUNT, config.image_vocab_size)

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
    static = dict(config=config, dtype=dtype, top_k=settings.top_k, codebook_count=codebook_count)
    inputs = (params, texts, masks, prompt_index, padded_seeds)
    if progress is None:
        tokens = _generate_jit(*inputs, *dynamic, step_count=config.image_length, **static)
    else:
        assert config.image_length % chunk_token_count == 0, 'chunks must tile the image'
        state = _start_jit(*inputs, config=config, dtype=dtype)
        chunks = []
        for done in range(chunk_token_count, config.image_length + 1, chunk_token_count):
            state, chunk = _decode_jit(params, state, *dynamic, step_count=chunk_token_count, **static)
            chunks.append(chunk.block_until_ready())  # so progress reports finished work
            progress(done, config.image_length)
        tokens = jnp.concatenate(chunks, axis=1)
    tokens = np.asarray(tokens)[:row_count]  # (M·N, 256)
    return tokens.reshape(prompt_count, candidate_count, config.image_length)
