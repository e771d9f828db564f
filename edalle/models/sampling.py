"""Sampling 256 image tokens from DalleBart: super-conditioning, filtering, forcing, compiled loops.

The shape of a call: M requests (`SampleRequest`), each a prompt with its own candidates,
seeds and knobs, are decoded together. The encoder runs once per distinct text (the prompts,
their negative texts, and the empty prompt); the decoder batch is 2B rows for B candidates
(the conditional rows, then their unconditional twins, each twin attending to its request's
negative text or to the empty prompt) that share one key/value cache, decoded by `lax.scan`
in chunks of 32 tokens (`bart_decode.decode_step` is one token). Everything that differs
between requests is a per-row array inside the compiled loop (`RowControls`): temperature,
top-k, top-p, condition scale, forced tokens and which forced tokens to score. Only "does
any row use top-p" and the chunk and cache sizes are compiled in, and batches are padded to
a few bucket sizes, so a new batch size rarely recompiles and a new knob value never does.

Every candidate samples with its own PRNG key, PRNGKey(seed) folded with the step index, so
a prompt + seed + settings gives the same tokens whatever else is in the batch, and forcing
a candidate's own first tokens with its own seed reproduces it. A forced prefix is filled
by `bart_decode.decode_block`, 16 positions per pass, instead of one step per token, once
for all rows that share it (`_prefill`).

The filters are pure functions on logits, tested on hand-made arrays; `sample_loop` takes
any `tokens_to_logits`, so it is tested with a fake model (flax lm1b's temperature_sampler).
"""

from __future__ import annotations

import math
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
    decode_block,
    decode_step,
    grow_cache,
    on_device,
    prepare_decoder,
    start_cache,
)

# Candidate rows are padded to one of these (one compile each); 9 is the bot's default 3 × 3 grid.
# Beyond the last, batches round up to a multiple of it.
ROW_BUCKETS = (1, 2, 4, 9, 16, 32, 64)
PROMPT_BUCKETS = (2, 4, 8, 16, 32, 64)  # distinct texts, the empty prompt included; the encoder is cheap
# The self-attention cache grows in steps of this many positions (`bart_decode.grow_cache`):
# four compiled decode loops (cache 64, 128, 192, 256) read on average 5/8 of the whole cache.
CACHE_GROWTH = 64
# A forced prefix is filled this many positions per decoder pass (one row of the 16 × 16 token
# grid), the passes looped inside one compiled call whatever the prefix's length.
PREFILL_BLOCK = 16
WHOLE_VOCABULARY = np.iinfo(np.int32).max  # a row's top-k when it has none: more codes than any row holds


class SamplingError(ValueError):
    """A sampling request the sampler refuses; the message is for the user."""


@dataclass(frozen=True)
class SamplingSettings:
    """One request's knobs. The defaults are dalle-mini's notebook: top-k 50, no top-p, temperature 1, scale 10."""

    top_k: int | None = 50  # the effective default of dalle-mini (transformers' generation default)
    top_p: float | None = None
    temperature: float = 1.0
    cond_scale: float = 10.0  # dalle-mini's super-conditioning scale

    def __post_init__(self) -> None:
        if self.top_k is not None and not (isinstance(self.top_k, int | np.integer) and self.top_k >= 1):
            raise SamplingError(f'top-k must be a whole number of at least 1 (got {self.top_k}).')
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise SamplingError(f'top-p must be above 0 and at most 1 (got {self.top_p}).')
        if not (math.isfinite(self.temperature) and self.temperature > 0.0):
            raise SamplingError(f'The temperature must be above 0 (got {self.temperature}).')
        if not math.isfinite(self.cond_scale):
            raise SamplingError(f'The condition scale must be a number (got {self.cond_scale}).')

    @property
    def uses_top_p(self) -> bool:
        return self.top_p is not None and self.top_p < 1.0  # top-p 1 keeps every code, as no top-p does


@dataclass(frozen=True, eq=False)
class SampleRequest:
    """One prompt's candidates in a sampling call, with everything that is theirs alone.

    Arrays are normalised on construction: ids int32, masks int32 / bool, forced arrays (N, 256).
    Forcing: where `forced_mask` is set, the candidate's token is `forced_tokens` (both halves of
    the super-conditioned batch then see it); the leading forced run common to every row of the
    call, in whole token rows, is filled by parallel passes before sampling starts.
    `score_forced_suffix` asks for each candidate's log-likelihood of its forced tokens after its
    first sampled one (a region repaint: see `sample_loop`).
    """

    text_ids: np.ndarray  # (Te,) the prompt's ids, as the tokenizer gives them
    text_mask: np.ndarray  # (Te,) 1 on real tokens, 0 on padding
    seeds: Sequence[int]  # one per candidate: candidate j samples with PRNGKey(seeds[j] mod 2**32)
    settings: SamplingSettings = SamplingSettings()
    negative_ids: np.ndarray | None = None  # (Te,) what the unconditional twins attend to; None: the empty prompt
    negative_mask: np.ndarray | None = None
    forced_tokens: np.ndarray | None = None  # (256,) for every candidate, or (N, 256) one row each
    forced_mask: np.ndarray | None = None  # same shape, true where the token is forced
    score_forced_suffix: bool = False

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put('text_ids', np.asarray(self.text_ids, np.int32))
        put('text_mask', np.asarray(self.text_mask, np.int32))
        put('seeds', tuple(int(seed) for seed in np.asarray(self.seeds).reshape(-1)))
        if self.text_ids.ndim != 1 or self.text_ids.shape != self.text_mask.shape:
            raise SamplingError(
                f'Text ids and mask must be one row each (got {self.text_ids.shape}, {self.text_mask.shape}).'
            )
        if not self.seeds:
            raise SamplingError('A request needs at least one seed (one per candidate).')
        if (self.negative_ids is None) != (self.negative_mask is None):
            raise SamplingError('A negative prompt needs both its ids and its mask.')
        if self.negative_ids is not None:
            put('negative_ids', np.asarray(self.negative_ids, np.int32))
            put('negative_mask', np.asarray(self.negative_mask, np.int32))
            if self.negative_ids.shape != self.text_ids.shape or self.negative_mask.shape != self.text_ids.shape:
                raise SamplingError('The negative prompt must have the shape of the prompt.')
        if (self.forced_tokens is None) != (self.forced_mask is None):
            raise SamplingError('Forcing tokens needs both the tokens and their mask.')
        if self.forced_tokens is not None:
            count = len(self.seeds)
            tokens, mask = np.asarray(self.forced_tokens), np.asarray(self.forced_mask, bool)
            if tokens.shape != mask.shape or tokens.ndim not in (1, 2) or (tokens.ndim == 2 and tokens.shape[0] != count):
                raise SamplingError(f'Forced tokens and mask must be (256,) or ({count}, 256), alike.')
            put('forced_tokens', np.broadcast_to(tokens.astype(np.int32), (count, tokens.shape[-1])))
            put('forced_mask', np.broadcast_to(mask, (count, mask.shape[-1])))
        elif self.score_forced_suffix:
            raise SamplingError('Only forced tokens can be scored: give forced tokens and their mask.')

    @property
    def candidate_count(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True)
class SampleResult:
    tokens: list[np.ndarray]  # per request, (N, 256) int32
    suffix_scores: list[np.ndarray | None]  # per request, (N,) float64 where `score_forced_suffix` was asked


def per_row(value: Any) -> Any:
    """A knob against (B, V) logits: a (B,) array becomes a (B, 1) column, a scalar stays as it is."""
    return value[:, None] if jnp.ndim(value) == 1 else value


def superconditioned_logits(cond: jax.Array, uncond: jax.Array, cond_scale: float | jax.Array) -> jax.Array:
    """Push the conditional logits away from the unconditional ones: uncond + s·(cond − uncond); s scalar or (B,)."""
    return uncond + per_row(cond_scale) * (cond - uncond)


def ordered_keys(x: jax.Array) -> jax.Array:
    """float32 → uint32 with the same order (IEEE bits, negatives flipped): exact to compare and bisect."""
    x = jnp.where(x == 0, 0.0, x).astype(jnp.float32)  # -0.0 and 0.0 are equal as floats, so one key
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def kth_largest_key(keys: jax.Array, k: int | jax.Array) -> jax.Array:
    """The k-th largest of each row of `ordered_keys` (B, V) → (B, 1), by bisection on the key; k an int or (B, 1).

    32 counting passes over the row instead of a sort: on CPU, `lax.top_k` sorts every row
    (≈2.4 ms per row of 16,384 logits, as long as the rest of a decode step for 9 rows).
    Invariant: at least k keys are ≥ `low`; the answer is the largest such value. A k above
    the row's length finds no such value and returns 0, the smallest key: the row is kept whole.
    """
    low = jnp.zeros(keys.shape[:-1] + (1,), jnp.uint32)
    high = jnp.full_like(low, 0xFFFFFFFF)

    def narrow(_, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        low, high = bounds
        mid = high - (high - low) // 2  # the upper middle, without overflow
        enough = jnp.sum(keys >= mid, axis=-1, keepdims=True) >= k
        return jnp.where(enough, mid, low), jnp.where(enough, high, mid - 1)

    return jax.lax.fori_loop(0, 32, narrow, (low, high))[0]


def nucleus_threshold_key(keys: jax.Array, probs: jax.Array, top_p: float | jax.Array) -> jax.Array:
    """The smallest key t (B, 1) whose strictly larger keys hold less than `top_p` of the probability.

    `keys` are `ordered_keys` (B, V), `probs` the softmax (B, V), `top_p` a float or (B, 1) in
    (0, 1]. A token is in the nucleus when the mass ranked strictly above it is below top_p,
    which is exactly "key ≥ t": the rule of the sorted cumulative sum, found by 32 bisection
    passes over the key instead of a sort (≈2.4 ms per row per step on a CPU). Invariant: the
    mass above `high` is below top_p (above the largest key there is none), and the mass
    above any key under `low` is not.
    """
    low = jnp.zeros(keys.shape[:-1] + (1,), jnp.uint32)
    high = jnp.full_like(low, 0xFFFFFFFF)

    def narrow(_, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        low, high = bounds
        mid = low + (high - low) // 2  # the lower middle: mid + 1 never overflows while low < high
        is_below = jnp.sum(jnp.where(keys > mid, probs, 0.0), axis=-1, keepdims=True) < top_p
        return jnp.where(is_below, low, mid + 1), jnp.where(is_below, mid, high)

    return jax.lax.fori_loop(0, 32, narrow, (low, high))[1]


def apply_top_k(logits: jax.Array, top_k: int | jax.Array | None) -> jax.Array:
    """Keep the k largest logits per row (and any ties with the k-th); the rest become -inf. k an int, (B,) or None."""
    if top_k is None or (isinstance(top_k, int) and top_k >= logits.shape[-1]):
        return logits
    keys = ordered_keys(logits)
    return jnp.where(keys >= kth_largest_key(keys, per_row(top_k)), logits, -jnp.inf)


def apply_top_p(logits: jax.Array, top_p: float | jax.Array) -> jax.Array:
    """Nucleus filter: keep the smallest set of top logits whose probability reaches top_p (a float or (B,)).

    A token is kept when the probability mass ranked above it is below top_p, so the most
    likely token always survives. Ties with the last kept logit are kept too. top_p 1 keeps
    every logit exactly (the float sum of the mass above the least likely code can round to 1).
    """
    top_p = per_row(top_p)
    keys = ordered_keys(logits)
    threshold = nucleus_threshold_key(keys, jax.nn.softmax(logits, axis=-1), top_p)
    return jnp.where((keys >= threshold) | (top_p >= 1.0), logits, -jnp.inf)


def filtered_logits(logits: jax.Array, top_k, top_p, temperature) -> jax.Array:
    """Temperature, then top-k, then top-p (transformers' warper order); each a scalar or (B,); None skips a filter."""
    logits = apply_top_k(logits / per_row(temperature), top_k)
    return logits if top_p is None else apply_top_p(logits, top_p)


@struct.dataclass
class RowControls:
    """What the compiled loop reads per candidate row besides the model: knobs, forcing, scoring.

    All are arrays, so a batch of requests with different knobs is one compiled program.
    """

    temperature: jax.Array  # (B,) float32
    top_k: jax.Array  # (B,) int32; WHOLE_VOCABULARY keeps every code
    top_p: jax.Array  # (B,) float32; 1 keeps every code (read only when the call has `use_top_p`)
    cond_scale: jax.Array  # (B,) float32
    forced_tokens: jax.Array  # (B, L) int32, read where forced_mask is set
    forced_mask: jax.Array  # (B, L) bool
    score_mask: jax.Array  # (B, L) bool: the forced positions whose log-likelihood the loop reports

    @classmethod
    def uniform(cls, row_count: int, length: int, settings: SamplingSettings = SamplingSettings()) -> RowControls:
        """Every row with the same knobs, nothing forced (host arrays; jit puts them on the device)."""
        rows = np.ones(row_count, np.float32)
        return cls(
            temperature=rows * settings.temperature,
            top_k=np.full(row_count, WHOLE_VOCABULARY if settings.top_k is None else settings.top_k, np.int32),
            top_p=rows * (1.0 if settings.top_p is None else settings.top_p),
            cond_scale=rows * settings.cond_scale,
            forced_tokens=np.zeros((row_count, length), np.int32),
            forced_mask=np.zeros((row_count, length), bool),
            score_mask=np.zeros((row_count, length), bool),
        )


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
    controls: RowControls,
    *,
    use_top_p: bool,
    codebook_count: int,
) -> tuple[DecodeState, jax.Array, jax.Array]:
    """Run `step_count` steps; returns the new state, the tokens (B, step_count), forced ones included,
    and the log-likelihood (B, step_count) of each scored forced token (0 elsewhere).

    `tokens_to_logits(model, tokens (2B,), index) -> (logits (2B, V), model)` sees each
    previous token twice: conditional rows first, then the unconditional rows. `use_top_p`
    (static) runs the nucleus filter for every row; rows without top-p hold 1 there.

    The log-likelihood is log softmax of the *conditional* logits (the prompt's own rows,
    temperature 1, over the codebook) at the forced token: the model's likelihood of the kept
    picture given the prompt and the repainted region, whatever the request's knobs or negative.
    Not the super-conditioned filtered logits the sampler draws from: those are no likelihood
    (the scale sharpens the distribution) and top-k / top-p set most forced tokens to -inf.
    It is returned per position and summed on the host in float64: a float32 running sum of
    a few hundred terms near -7 would round at 1e-4 (the spacing of float32 near 1000).
    """

    def step(state: DecodeState, _) -> tuple[DecodeState, tuple[jax.Array, jax.Array]]:
        row_count = state.prev_token.shape[0]
        tokens = jnp.concatenate([state.prev_token, state.prev_token])  # (2B,)
        logits, model = tokens_to_logits(state.model, tokens, state.index)
        logits = logits[:, :codebook_count].astype(jnp.float32)  # (2B, K)
        cond, uncond = logits[:row_count], logits[row_count:]

        def at_index(array: jax.Array) -> jax.Array:  # (B, L) → (B,) at this step's position
            return jax.lax.dynamic_index_in_dim(array, state.index, axis=1, keepdims=False)

        forced = at_index(controls.forced_tokens)  # (B,)
        is_forced, is_scored = at_index(controls.forced_mask), at_index(controls.score_mask)
        log_likelihood = jnp.take_along_axis(cond, forced[:, None], axis=-1)[:, 0] - jax.nn.logsumexp(cond, axis=-1)

        logits = superconditioned_logits(cond, uncond, controls.cond_scale)  # (B, K)
        logits = filtered_logits(logits, controls.top_k, controls.top_p if use_top_p else None, controls.temperature)
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(state.keys, state.index)
        sampled = jax.vmap(jax.random.categorical)(step_keys, logits).astype(jnp.int32)  # (B,)
        token = jnp.where(is_forced, forced, sampled)
        scored = jnp.where(is_scored, log_likelihood, 0.0)
        return state.replace(index=state.index + 1, prev_token=token, model=model), (token, scored)

    state, (tokens, scored) = jax.lax.scan(step, state, None, length=step_count)
    return state, tokens.T, scored.T


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
    weights: SamplerWeights,
    text_ids,
    text_mask,
    prompt_index,
    twin_index,
    seeds,
    *,
    config: BartConfig,
    dtype,
    cache_length: int,
) -> DecodeState:
    """Encode the distinct texts once and lay out the decoder batch: conditional rows, then their twins."""
    encoder_state = encode(weights.encoder, config, text_ids, text_mask, dtype)  # (P, Te, D)
    row_count = prompt_index.shape[0]
    row_prompt = jnp.concatenate([prompt_index, twin_index])  # (2B,) the text each decoder row attends to
    return DecodeState(
        index=jnp.array(0, jnp.int32),
        prev_token=jnp.full((row_count,), config.decoder_start_token_id, jnp.int32),
        keys=jax.vmap(jax.random.PRNGKey)(seeds),
        model=start_cache(weights.decoder, config, encoder_state, text_mask, row_prompt, cache_length),
    )


def _prefill(
    weights: SamplerWeights,
    state: DecodeState,
    controls: RowControls,
    representative: jax.Array,
    source: jax.Array,
    block_count: jax.Array,
    *,
    config: BartConfig,
) -> DecodeState:
    """Write the cache for the first `block_count` × 16 positions, all forced; the state then continues after them.

    Decoder rows that attend to the same text and are forced to the same prefix have the same
    cache there (the nine candidates of a variation: one conditional row and one twin), so the
    passes run on one `representative` (U,) row of each kind, and every row of the batch then
    copies its kind's cache (`source` (2B,) indexes the U). On a CPU the passes are compute-bound,
    so this divides the prefill's cost by the number of candidates sharing a prefix.
    """
    row_count = state.prev_token.shape[0]
    first = jnp.full((row_count, 1), config.decoder_start_token_id, jnp.int32)
    fed = jnp.concatenate([first, controls.forced_tokens[:, :-1]], axis=1)  # (B, L): the token fed at each position
    fed = jnp.concatenate([fed, fed])[representative]  # (U, L)
    cache = state.model
    shape = (representative.shape[0],) + cache.keys[0].shape[1:]  # (U, H, S, C)
    unique = cache.replace(
        keys=[jnp.zeros(shape, k.dtype) for k in cache.keys],
        values=[jnp.zeros(shape, v.dtype) for v in cache.values],
        row_prompt=cache.row_prompt[representative],
        cross_mask=cache.cross_mask[:, representative],
    )

    def fill(block: jax.Array, unique: DecodeCache) -> DecodeCache:
        start = block * PREFILL_BLOCK
        tokens = jax.lax.dynamic_slice_in_dim(fed, start, PREFILL_BLOCK, axis=1)  # (U, T)
        return decode_block(weights.decoder, config, unique, tokens, start)[1]  # logits unused: XLA drops them

    unique = jax.lax.fori_loop(0, block_count, fill, unique)
    cache = cache.replace(keys=[k[source] for k in unique.keys], values=[v[source] for v in unique.values])
    end = block_count * PREFILL_BLOCK
    last = jax.lax.dynamic_index_in_dim(controls.forced_tokens, end - 1, axis=1, keepdims=False)  # (B,)
    return state.replace(index=end, prev_token=last, model=cache)


def _decode(
    weights: SamplerWeights, state: DecodeState, controls: RowControls, *, config, step_count, use_top_p, codebook_count
):
    def tokens_to_logits(cache: DecodeCache, tokens: jax.Array, index: jax.Array) -> tuple[jax.Array, DecodeCache]:
        return decode_step(weights.decoder, config, cache, tokens, index)

    return sample_loop(tokens_to_logits, state, step_count, controls, use_top_p=use_top_p, codebook_count=codebook_count)


def _grow(state: DecodeState, *, length: int) -> DecodeState:
    return state.replace(model=grow_cache(state.model, length))


_start_jit = jax.jit(_start, static_argnames=('config', 'dtype', 'cache_length'))
# the state is donated: its cache is updated in place instead of copied at every call
_prefill_jit = jax.jit(_prefill, static_argnames='config', donate_argnums=1)
_decode_jit = jax.jit(_decode, static_argnames=('config', 'step_count', 'use_top_p', 'codebook_count'), donate_argnums=1)
_grow_jit = jax.jit(_grow, static_argnames='length')


def bucket_size(count: int, buckets: tuple[int, ...] = ROW_BUCKETS) -> int:
    """The padded batch size: the smallest bucket that fits, or the next multiple of the largest."""
    for bucket in buckets:
        if count <= bucket:
            return bucket
    return -(-count // buckets[-1]) * buckets[-1]


@dataclass(frozen=True)
class SampleBatch:
    """The requests laid out as padded host arrays: the text table and one entry per candidate row."""

    texts: np.ndarray  # (P, Te) the empty prompt first, then each distinct prompt or negative text once
    masks: np.ndarray  # (P, Te)
    prompt_index: np.ndarray  # (B,) the text each conditional row attends to
    twin_index: np.ndarray  # (B,) the text its unconditional twin attends to
    seeds: np.ndarray  # (B,) uint32
    controls: RowControls  # of numpy arrays
    rows: list[slice]  # each request's rows
    use_top_p: bool
    prefix_length: int  # forced positions every row shares from the start, in whole prefill blocks
    prefill_representatives: np.ndarray  # (U,) one decoder row (of 2B) per distinct (text, forced prefix)
    prefill_sources: np.ndarray  # (2B,) each decoder row's entry in the representatives
    scored: list[bool]  # each request's `score_forced_suffix`


def lay_out(
    requests: Sequence[SampleRequest],
    config: BartConfig,
    uncond_ids: np.ndarray,
    uncond_mask: np.ndarray,
    codebook_count: int,
    *,
    prefill: bool = True,
) -> SampleBatch:
    """Check the requests and pad them into one batch of host arrays (no device work)."""
    if not requests:
        raise SamplingError('Nothing to sample: give at least one request.')
    length, text_length = config.image_length, config.max_text_length
    row_count = sum(r.candidate_count for r in requests)
    row_bucket = bucket_size(row_count)

    texts: dict[bytes, int] = {}
    table: list[tuple[np.ndarray, np.ndarray]] = []

    def text_row(ids: np.ndarray, mask: np.ndarray) -> int:
        """The table row of a text, added on first sight: equal texts share one encoder row."""
        ids, mask = np.asarray(ids, np.int32), np.asarray(mask, np.int32)
        if ids.shape != (text_length,) or mask.shape != (text_length,):
            raise SamplingError(f'Text ids and masks must have {text_length} positions (got {ids.shape}, {mask.shape}).')
        key = ids.tobytes() + mask.tobytes()
        if key not in texts:
            texts[key] = len(table)
            table.append((ids, mask))
        return texts[key]

    text_row(uncond_ids, uncond_mask)  # row 0: the empty prompt
    controls = RowControls.uniform(row_bucket, length)  # padding rows keep these
    prompt_index, twin_index = np.zeros(row_bucket, np.int32), np.zeros(row_bucket, np.int32)
    seeds = np.zeros(row_bucket, np.uint32)
    leading_forced = np.full(row_count, length)  # per row: forced positions before its first sampled one
    rows = []
    offset = 0
    for request in requests:
        n = request.candidate_count
        sl = slice(offset, offset + n)
        rows.append(sl)
        offset += n
        prompt_index[sl] = text_row(request.text_ids, request.text_mask)
        if request.negative_ids is not None:
            twin_index[sl] = text_row(request.negative_ids, request.negative_mask)
        seeds[sl] = np.asarray(request.seeds, np.int64) & 0xFFFFFFFF
        settings = request.settings
        controls.temperature[sl] = settings.temperature
        controls.top_k[sl] = WHOLE_VOCABULARY if settings.top_k is None else settings.top_k
        controls.top_p[sl] = settings.top_p if settings.uses_top_p else 1.0
        controls.cond_scale[sl] = settings.cond_scale
        if request.forced_tokens is None:
            leading_forced[sl] = 0
            continue
        tokens, mask = request.forced_tokens, request.forced_mask
        if tokens.shape[1] != length:
            raise SamplingError(f'Forced tokens must cover the {length} image positions (got {tokens.shape[1]}).')
        if np.any(mask & ((tokens < 0) | (tokens >= codebook_count))):
            raise SamplingError(f'Forced tokens must be codes from 0 to {codebook_count - 1}.')
        controls.forced_tokens[sl] = np.where(mask, tokens, 0)
        controls.forced_mask[sl] = mask
        first_sampled = np.where(mask.all(axis=1), length, mask.argmin(axis=1))  # (N,)
        leading_forced[sl] = first_sampled
        if request.score_forced_suffix:
            controls.score_mask[sl] = mask & (np.arange(length) > first_sampled[:, None])

    prompt_bucket = bucket_size(len(table), PROMPT_BUCKETS)
    text_ids = np.full((prompt_bucket, text_length), config.pad_token_id, np.int32)
    text_mask = np.zeros((prompt_bucket, text_length), np.int32)
    for i, (ids, mask) in enumerate(table):
        text_ids[i], text_mask[i] = ids, mask
    prefix = int(leading_forced.min()) // PREFILL_BLOCK * PREFILL_BLOCK if prefill else 0
    prefix = min(prefix, length - PREFILL_BLOCK)  # at least one chunk is decoded
    representatives, sources = distinct_prefixes(np.concatenate([prompt_index, twin_index]), controls.forced_tokens, prefix)
    return SampleBatch(
        texts=text_ids,
        masks=text_mask,
        prompt_index=prompt_index,
        twin_index=twin_index,
        seeds=seeds,
        controls=controls,
        rows=rows,
        use_top_p=any(r.settings.uses_top_p for r in requests),
        prefix_length=prefix,
        prefill_representatives=representatives,
        prefill_sources=sources,
        scored=[r.score_forced_suffix for r in requests],
    )


def distinct_prefixes(row_text: np.ndarray, forced_tokens: np.ndarray, prefix: int) -> tuple[np.ndarray, np.ndarray]:
    """Decoder rows (2B: row_text's conditional rows, then twins) grouped by text and forced prefix.

    Returns one representative row per group, padded to a row bucket (the padding repeats
    row 0, and no row reads it), and each row's group (2B,).
    """
    forced = np.concatenate([forced_tokens, forced_tokens])[:, :prefix]  # (2B, prefix)
    keys = np.concatenate([row_text[:, None], forced], axis=1)
    _, first, source = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    representatives = np.zeros(bucket_size(len(first)), np.int32)
    representatives[: len(first)] = first
    return representatives, source.reshape(-1).astype(np.int32)


Preview = Callable[[int, list[np.ndarray]], None]


def sample_image_tokens(
    weights: SamplerWeights,
    config: BartConfig,
    requests: Sequence[SampleRequest],
    uncond_ids: np.ndarray,
    uncond_mask: np.ndarray,
    *,
    codebook_count: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    preview: Preview | None = None,
    chunk_token_count: int = 32,
    prefill: bool = True,
) -> SampleResult:
    """Image tokens for every request's candidates, all in one compiled decode call per chunk.

    `weights` come from `prepare_sampler` (once per loaded model); they fix the compute dtype.
    `uncond_ids`/`uncond_mask` (Te,) are the empty prompt, the twins' text where a request has
    no negative. `codebook_count` limits drawing to the VQGAN's codes (default: every logit).
    Decoding runs in chunks of `chunk_token_count` tokens, the cache staying on the device;
    after each, `progress(tokens_done, 256)` is called, and `preview(tokens_done, tokens)` with
    every request's tokens so far, (N, tokens_done) each (a host copy: it waits for the chunk;
    without `preview` nothing waits unless `progress` asks). A forced prefix every row shares is
    filled first (`prefill=False` decodes it step by step instead, the same tokens).

    Compiled programs depend only on shapes and `use_top_p`, never on knob, seed or token values:
    per row bucket × text bucket, the start, the cache growths and the 32-step chunk at each cache
    size; with a forced prefix, the prefill per distinct-prefix bucket and cache size, and a
    16-step chunk when the prefix ends mid-chunk (an odd number of kept token rows).
    """
    codebook_count = codebook_count or weights.decoder.lm_head.shape[1]  # the drawable codes
    length = config.image_length
    if length % chunk_token_count:
        raise SamplingError(f'chunks of {chunk_token_count} tokens do not tile the {length} image tokens')
    batch = lay_out(requests, config, uncond_ids, uncond_mask, codebook_count, prefill=prefill)
    controls = jax.device_put(batch.controls)
    static = dict(config=config, use_top_p=batch.use_top_p, codebook_count=codebook_count)
    prefix = batch.prefix_length

    def cache_length(done: int) -> int:  # room for the positions written by the chunk ending at `done`
        return min(-(-done // CACHE_GROWTH) * CACHE_GROWTH, length)

    def grown(state: DecodeState, done: int) -> DecodeState:
        return _grow_jit(state, length=cache_length(done)) if state.model.keys[0].shape[2] < cache_length(done) else state

    so_far = np.array(batch.controls.forced_tokens) if preview is not None else None  # (B, L) host copy for previews

    def report(done: int, chunk: jax.Array) -> None:
        """After a chunk (B, T) of tokens ending at `done` is decoded (or prefilled)."""
        if so_far is not None:
            so_far[:, done - chunk.shape[1] : done] = np.asarray(chunk)
            preview(done, [so_far[rows, :done].copy() for rows in batch.rows])
        if progress is not None:
            chunk.block_until_ready()  # so progress reports finished work
            progress(done, length)

    inputs = (weights, batch.texts, batch.masks, batch.prompt_index, batch.twin_index, batch.seeds)
    first_end = prefix or chunk_token_count
    state = _start_jit(*inputs, config=config, dtype=weights.decoder.lm_head.dtype, cache_length=cache_length(first_end))
    if prefix:
        prefill_rows = (batch.prefill_representatives, batch.prefill_sources, np.int32(prefix // PREFILL_BLOCK))
        state = _prefill_jit(weights, state, controls, *prefill_rows, config=config)
        report(prefix, state.prev_token[:, None])  # the prefix's last token, ready once the prefill is
    chunks, scored = [batch.controls.forced_tokens[:, :prefix]], []  # device arrays (B, T), read once at the end
    done = prefix
    for end in range(chunk_token_count, length + 1, chunk_token_count):
        if end <= done:
            continue
        state, chunk, log_likelihood = _decode_jit(weights, grown(state, end), controls, step_count=end - done, **static)
        chunks.append(chunk)
        scored.append(log_likelihood)
        done = end
        report(done, chunk)
    tokens = np.concatenate([np.asarray(chunk) for chunk in chunks], axis=1)  # (B, 256)
    if any(batch.scored):
        scores = np.concatenate([np.asarray(s) for s in scored], axis=1).sum(axis=1, dtype=np.float64)  # (B,)
    return SampleResult(
        tokens=[tokens[rows] for rows in batch.rows],
        suffix_scores=[scores[rows] if asked else None for rows, asked in zip(batch.rows, batch.scored, strict=True)],
    )


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
    """Image tokens (M, N, 256) int32 for text ids (M, 64) with N candidates each, all with one `settings`.

    `seeds` holds one int per candidate, shape (M, N) or (M·N,), taken modulo 2**32. The
    one-settings form of `sample_image_tokens` (see there for the rest).
    """
    text_ids, text_mask = np.asarray(text_ids), np.asarray(text_mask)
    seeds = np.asarray(seeds, np.int64).reshape(text_ids.shape[0], candidates_per_prompt)
    requests = [SampleRequest(ids, mask, row, settings) for ids, mask, row in zip(text_ids, text_mask, seeds, strict=True)]
    result = sample_image_tokens(
        weights,
        config,
        requests,
        uncond_ids,
        uncond_mask,
        codebook_count=codebook_count,
        progress=progress,
        chunk_token_count=chunk_token_count,
    )
    return np.stack(result.tokens)
