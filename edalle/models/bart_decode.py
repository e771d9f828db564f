"""DalleBart's decoder one token at a time: the inner loop of sampling, written for speed.

`bart.py` holds the published parameter tree and the whole-sequence math (tested against
min-dalle); this module is the same decoder specialised to one new token per row against a
key/value cache, and is tested against `bart.teacher_forced_logits`. It exists because a
decode step is memory-bound: every step reads all decoder weights (≈760 MB for mini in
float32) for a handful of rows, so what matters is touching each byte once. Profiling the
Flax form on a 2-core CPU showed three costs beyond the weights, each removed here:

- Layer weights sliced out of the scanned (L, …) stacks inside the loop were copied every
  step. `prepare_decoder` splits them per layer once, and fuses q/k/v and the two GLU input
  projections into one wider matmul each (fewer, better-shaped matmuls for small batches).
- A cache laid out (B, S, H, C) was transposed for every attention einsum, and the step's
  new keys were written back into a stacked (L, …) cache. Here each layer owns a
  (B, H, S, C) cache that is updated in place before the attention reads it.
- Cross-attention keys/values were held per row, although all candidates of a prompt share
  them (and every unconditional row shares one set). They are held per prompt, and each row
  picks its prompt with a one-hot matrix: the prompt count is small, so computing scores
  against every prompt costs less than reading per-row copies.

`decode_block` is the same step over many consecutive positions at once, for filling the
cache of a forced prefix: there the weights are read once for all positions.
"""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from edalle.config import BartConfig
from edalle.models.bart import softmax_masked

CODEBOOK_COUNT = 2**14  # VQGAN f16-16384 codes: the logits ever drawn (mega has 31 more, and the start token)


@struct.dataclass
class DecoderLayerWeights:
    qkv: jax.Array  # (D, 3D) self-attention q | k | v
    out: jax.Array  # (D, D)
    cross_q: jax.Array  # (D, D)
    cross_kv: jax.Array  # (D, 2D), used once per prompt by `start_cache`
    cross_out: jax.Array  # (D, D)
    glu_in: jax.Array  # (D, 2F) GLU Dense_0 | Dense_1
    glu_out: jax.Array  # (F, D)
    norms: dict[str, jax.Array]  # LayerNorm biases (and the two scales), float32


@struct.dataclass
class DecoderWeights:
    layers: list[DecoderLayerWeights]
    embed_tokens: jax.Array  # (V + 1, D)
    embed_positions: jax.Array  # (256, D)
    embed_norm: dict[str, jax.Array]  # layernorm_embedding scale and bias
    final_norm_bias: jax.Array  # (D,)
    lm_head: jax.Array  # (D, K): the columns of the K drawable codes only


# DecoderLayerWeights field → the (module, projection) kernels it joins, from the scanned stack
FUSED_KERNELS = {
    'qkv': (('FlaxBartAttention_0', 'q_proj'), ('FlaxBartAttention_0', 'k_proj'), ('FlaxBartAttention_0', 'v_proj')),
    'out': (('FlaxBartAttention_0', 'out_proj'),),
    'cross_q': (('FlaxBartAttention_1', 'q_proj'),),
    'cross_kv': (('FlaxBartAttention_1', 'k_proj'), ('FlaxBartAttention_1', 'v_proj')),
    'cross_out': (('FlaxBartAttention_1', 'out_proj'),),
    'glu_in': (('GLU_0', 'Dense_0'), ('GLU_0', 'Dense_1')),
    'glu_out': (('GLU_0', 'Dense_2'),),
}


def prepare_decoder(params: dict, config: BartConfig, dtype: Any = jnp.float32, *, release: bool = False) -> DecoderWeights:
    """Per-layer, fused copies of the decoder weights in the compute dtype (norms stay float32).

    `params` may hold numpy or jax arrays; the copies are made on the host and then put on
    the default device, which compiles nothing. With `release`, each scanned kernel stack
    is removed from `params` as soon as its per-layer copies exist, and the decoder subtree
    and lm_head once all are made, so a checkpoint just read (`bart_checkpoint.read_params`)
    is never held twice: the peak is one copy plus the largest pair of stacks.
    """
    decoder = params['model']['decoder']
    stack = decoder['layers']['FlaxBartDecoderLayers']

    fields: dict[str, list[jax.Array]] = {}
    for field, sources in FUSED_KERNELS.items():
        kernels = [np.asarray(stack[module][name]['kernel']) for module, name in sources]  # each (L, D_in, D_out)
        fields[field] = [on_device([k[layer] for k in kernels], dtype) for layer in range(config.decoder_layers)]
        del kernels
        if release:
            for module, name in sources:
                del stack[module][name]

    def norms(layer: int) -> dict[str, jax.Array]:
        attention = {f'ln{i}_bias': stack[f'LayerNorm_{i}']['bias'][layer] for i in range(4)}
        attention |= {f'ln{i}_scale': stack[f'LayerNorm_{i}']['scale'][layer] for i in (1, 3)}
        glu = {f'glu_ln{i}_bias': stack['GLU_0'][f'LayerNorm_{i}']['bias'][layer] for i in range(2)}
        return {k: on_device(v, np.float32) for k, v in (attention | glu).items()}

    layers = [
        DecoderLayerWeights(**{field: copies[i] for field, copies in fields.items()}, norms=norms(i))
        for i in range(config.decoder_layers)
    ]
    weights = DecoderWeights(
        layers=layers,
        embed_tokens=on_device(decoder['embed_tokens']['embedding'], dtype),
        embed_positions=on_device(decoder['embed_positions']['embedding'], dtype),
        embed_norm={k: on_device(v, np.float32) for k, v in decoder['layernorm_embedding'].items()},
        final_norm_bias=on_device(decoder['final_ln']['bias'], np.float32),
        # 16,384 columns instead of 16,385 (or mega's 16,416): less to read, and a better-shaped matmul
        lm_head=on_device(np.asarray(params['lm_head']['kernel'])[:, : min(CODEBOOK_COUNT, config.image_vocab_size)], dtype),
    )
    if release:
        del params['model']['decoder'], params['lm_head']
    return weights


HOST_ALIGNMENT = 64  # bytes: XLA's CPU client uses a host array this aligned in place instead of copying it
# `may_alias` (recent jax): older ones copy, which only costs the memory this saves
_MAY_ALIAS = {'may_alias': True} if 'may_alias' in inspect.signature(jax.device_put).parameters else {}


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a `HOST_ALIGNMENT`-byte boundary.

    numpy's own allocations are only 16-byte aligned, and XLA's CPU client copies such an array
    when it becomes a jax array; one aligned here is adopted as it is (see `on_device`).
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(size + HOST_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % HOST_ALIGNMENT
    return raw[start : start + size].view(dtype).reshape(shape)


def on_device(array: Any, dtype: Any = None) -> jax.Array:
    """A host or device array (or a list of 2-D ones, joined along axis 1) as a jax array on the default device.

    Cast and joined on the host (no compile), straight into a new aligned buffer that is handed over
    with `may_alias`: on the CPU backend the jax array then *is* that buffer, so a weight is held
    once, not once by numpy and again by XLA until the transfer lets the numpy copy go (which, for
    a whole checkpoint, held 0.24 GB more for mini and 0.46 GB more for mega, bench/RESULTS.md). On a GPU the
    buffer is copied to the device and released. The buffer is new, so nothing else can write to it.
    """
    parts = [np.asarray(part) for part in array] if isinstance(array, list) else [np.asarray(array)]
    target_dtype = np.dtype(dtype) if dtype is not None else parts[0].dtype
    if len(parts) == 1:
        host = aligned_empty(parts[0].shape, target_dtype)
        np.copyto(host, parts[0], casting='unsafe')
    else:  # e.g. q | k | v: each (D_in, D_out_i) → (D_in, ΣD_out_i)
        host = aligned_empty((parts[0].shape[0], sum(part.shape[1] for part in parts)), target_dtype)
        column = 0
        for part in parts:
            np.copyto(host[:, column : column + part.shape[1]], part, casting='unsafe')
            column += part.shape[1]
    return jax.device_put(host, **_MAY_ALIAS)


@struct.dataclass
class DecodeCache:
    keys: list[jax.Array]  # per layer (R, H, S, C): self-attention keys of positions written so far, S ≤ 256
    values: list[jax.Array]
    cross_keys: list[jax.Array]  # per layer (H, P·Te, C): one set per prompt, shared by its rows
    cross_values: list[jax.Array]  # (heads first, so the step's batched matmuls need no transposes)
    row_prompt: jax.Array  # (R, P) one-hot: which prompt each row attends to
    cross_mask: jax.Array  # (1, R, Te) bool: the row's prompt's real tokens


def layer_norm(x: jax.Array, bias: jax.Array, scale: jax.Array | None = None) -> jax.Array:
    """LayerNorm over the last axis in float32 (eps 1e-5), returned in x's dtype."""
    y = x.astype(jnp.float32)
    mean = y.mean(-1, keepdims=True)
    y = (y - mean) * jax.lax.rsqrt(jnp.square(y - mean).mean(-1, keepdims=True) + 1e-5)
    return ((y if scale is None else y * scale) + bias).astype(x.dtype)


def split_heads(x: jax.Array, heads: int) -> jax.Array:
    """(…, D) → (…, H, C)."""
    return x.reshape(x.shape[:-1] + (heads, -1))


def start_cache(
    weights: DecoderWeights,
    config: BartConfig,
    encoder_state: jax.Array,  # (P, Te, D)
    text_mask: jax.Array,  # (P, Te)
    row_prompt: jax.Array,  # (R,) int: the prompt row of each decoder row
    length: int | None = None,
) -> DecodeCache:
    """An empty self-attention cache of `length` positions (default: the whole image) for R rows,
    and every layer's cross keys/values per prompt. A shorter cache is grown by `grow_cache`.
    """
    heads = config.decoder_attention_heads
    dtype = weights.lm_head.dtype
    state = encoder_state.astype(dtype)
    cross_keys, cross_values = [], []
    for layer in weights.layers:
        keys, values = jnp.split(split_heads(state @ layer.cross_kv, 2 * heads), 2, axis=-2)  # (P, Te, H, C)
        cross_keys.append(keys.transpose(2, 0, 1, 3).reshape(heads, -1, keys.shape[-1]))
        cross_values.append(values.transpose(2, 0, 1, 3).reshape(heads, -1, values.shape[-1]))
    rows, prompts = row_prompt.shape[0], encoder_state.shape[0]
    one_hot = jax.nn.one_hot(row_prompt, prompts, dtype=dtype)  # (R, P)
    shape = (rows, heads, length or config.image_length, config.d_model // heads)
    return DecodeCache(
        keys=[jnp.zeros(shape, dtype) for _ in weights.layers],
        values=[jnp.zeros(shape, dtype) for _ in weights.layers],
        cross_keys=cross_keys,
        cross_values=cross_values,
        row_prompt=one_hot,
        cross_mask=text_mask.astype(bool)[row_prompt][None],
    )


def grow_cache(cache: DecodeCache, length: int) -> DecodeCache:
    """The same cache with room for `length` positions (the new ones empty).

    Attention reads every cached position, written or not, so sampling starts with a short
    cache and grows it as the image fills: for 9 candidates in float32 the whole-image cache is
    450 MB read per step, about a quarter of a CPU decode step.
    """
    pad = [(0, 0), (0, 0), (0, length - cache.keys[0].shape[2]), (0, 0)]
    return cache.replace(keys=[jnp.pad(k, pad) for k in cache.keys], values=[jnp.pad(v, pad) for v in cache.values])


def decode_step(
    weights: DecoderWeights, config: BartConfig, cache: DecodeCache, tokens: jax.Array, index: jax.Array
) -> tuple[jax.Array, DecodeCache]:
    """Logits (R, K) of the drawable codes for one token per row at `index`; the cache with its keys written.

    The cache must have room for position `index` (see `grow_cache`).
    """
    heads = config.decoder_attention_heads
    dtype = weights.lm_head.dtype
    scale = (config.d_model // heads) ** -0.5
    is_written = (jnp.arange(cache.keys[0].shape[2]) <= index)[None, None, :]  # (1, 1, S): this token included

    x = weights.embed_tokens[tokens] + weights.embed_positions[index]  # (R, D)
    x = layer_norm(x, weights.embed_norm['bias'], weights.embed_norm['scale'])
    new_keys, new_values = [], []
    for i, layer in enumerate(weights.layers):
        n = layer.norms
        h = layer_norm(x, n['ln0_bias'])
        q, k, v = jnp.split(split_heads(h @ layer.qkv, 3 * heads), 3, axis=-2)  # (R, H, C) each
        at = (0, 0, index, 0)
        keys = jax.lax.dynamic_update_slice(cache.keys[i], k[:, :, None, :], at)  # (R, H, S, C)
        values = jax.lax.dynamic_update_slice(cache.values[i], v[:, :, None, :], at)
        new_keys.append(keys)
        new_values.append(values)
        scores = jnp.einsum('rhc,rhsc->rhs', q * scale, keys, preferred_element_type=jnp.float32)
        attn = jnp.einsum('rhs,rhsc->rhc', softmax_masked(scores, is_written).astype(dtype), values)
        x = x + layer_norm(attn.reshape(x.shape) @ layer.out, n['ln1_bias'], n['ln1_scale'])

        h = layer_norm(x, n['ln2_bias'])
        q = split_heads(h @ layer.cross_q, heads) * scale  # (R, H, C)
        scores = jnp.einsum('rhc,hkc->hrk', q, cache.cross_keys[i], preferred_element_type=jnp.float32)
        scores = scores.reshape(scores.shape[:2] + cache.row_prompt.shape[1:] + (-1,))  # (H, R, P, Te)
        scores = jnp.einsum('rp,hrpt->hrt', cache.row_prompt.astype(jnp.float32), scores)  # each row's own prompt
        probs = softmax_masked(scores, cache.cross_mask).astype(dtype)  # (H, R, Te)
        spread = (cache.row_prompt[None, :, :, None] * probs[:, :, None, :]).reshape(scores.shape[:2] + (-1,))
        attn = jnp.einsum('hrk,hkc->rhc', spread, cache.cross_values[i])  # (R, H, C); zero weight on other prompts
        x = x + layer_norm(attn.reshape(x.shape) @ layer.cross_out, n['ln3_bias'], n['ln3_scale'])

        gate, value = jnp.split(layer_norm(x, n['glu_ln0_bias']) @ layer.glu_in, 2, axis=-1)
        h = layer_norm(jax.nn.gelu(gate, approximate=False) * value, n['glu_ln1_bias'])
        x = x + h @ layer.glu_out
    logits = layer_norm(x, weights.final_norm_bias) @ weights.lm_head
    return logits, cache.replace(keys=new_keys, values=new_values)


def decode_block(
    weights: DecoderWeights, config: BartConfig, cache: DecodeCache, tokens: jax.Array, start: jax.Array
) -> tuple[jax.Array, DecodeCache]:
    """Logits (R, T, K) for T consecutive tokens per row at positions start … start+T−1, their keys written in one pass.

    The prefill of a forced prefix. A decode step is memory-bound (it reads every weight for a
    handful of rows), so T steps read the weights T times; this pass reads them once for R·T
    token rows. The math is `decode_step`'s, each query attending to the cache up to its own
    position; a caller that needs only the cache drops the logits, and XLA then leaves the
    lm_head matmul out. The cache must have room for position start + T − 1 (see `grow_cache`).
    """
    heads = config.decoder_attention_heads
    dtype = weights.lm_head.dtype
    scale = (config.d_model // heads) ** -0.5
    count = tokens.shape[1]
    positions = start + jnp.arange(count)  # (T,)
    is_written = (jnp.arange(cache.keys[0].shape[2])[None, :] <= positions[:, None])[None, None]  # (1, 1, T, S)
    cross_mask = cache.cross_mask[:, :, None, :]  # (1, R, 1, Te)
    row_prompt = cache.row_prompt.astype(jnp.float32)  # (R, P)

    x = weights.embed_tokens[tokens] + jax.lax.dynamic_slice_in_dim(weights.embed_positions, start, count)  # (R, T, D)
    x = layer_norm(x, weights.embed_norm['bias'], weights.embed_norm['scale'])
    new_keys, new_values = [], []
    for i, layer in enumerate(weights.layers):
        n = layer.norms
        h = layer_norm(x, n['ln0_bias'])
        q, k, v = jnp.split(split_heads(h @ layer.qkv, 3 * heads), 3, axis=-2)  # (R, T, H, C) each
        at = (0, 0, start, 0)
        keys = jax.lax.dynamic_update_slice(cache.keys[i], k.transpose(0, 2, 1, 3), at)  # (R, H, S, C)
        values = jax.lax.dynamic_update_slice(cache.values[i], v.transpose(0, 2, 1, 3), at)
        new_keys.append(keys)
        new_values.append(values)
        scores = jnp.einsum('rthc,rhsc->rhts', q * scale, keys, preferred_element_type=jnp.float32)
        attn = jnp.einsum('rhts,rhsc->rthc', softmax_masked(scores, is_written).astype(dtype), values)
        x = x + layer_norm(attn.reshape(x.shape) @ layer.out, n['ln1_bias'], n['ln1_scale'])

        h = layer_norm(x, n['ln2_bias'])
        q = split_heads(h @ layer.cross_q, heads) * scale  # (R, T, H, C)
        scores = jnp.einsum('rthc,hkc->hrtk', q, cache.cross_keys[i], preferred_element_type=jnp.float32)
        scores = scores.reshape(scores.shape[:3] + row_prompt.shape[1:] + (-1,))  # (H, R, T, P, Te)
        scores = jnp.einsum('rp,hrtpe->hrte', row_prompt, scores)  # each row's own prompt
        probs = softmax_masked(scores, cross_mask).astype(dtype)  # (H, R, T, Te)
        spread = (cache.row_prompt[None, :, None, :, None] * probs[:, :, :, None, :]).reshape(scores.shape[:3] + (-1,))
        attn = jnp.einsum('hrtk,hkc->rthc', spread, cache.cross_values[i])  # (R, T, H, C)
        x = x + layer_norm(attn.reshape(x.shape) @ layer.cross_out, n['ln3_bias'], n['ln3_scale'])

        gate, value = jnp.split(layer_norm(x, n['glu_ln0_bias']) @ layer.glu_in, 2, axis=-1)
        h = layer_norm(jax.nn.gelu(gate, approximate=False) * value, n['glu_ln1_bias'])
        x = x + h @ layer.glu_out
    logits = layer_norm(x, weights.final_norm_bias) @ weights.lm_head
    return logits, cache.replace(keys=new_keys, values=new_values)
