"""DalleBart in Flax: the NormFormer/GLU BART that turns a prompt into 256 VQGAN codes.

Checkpoint-compatible with dalle-mini's published `flax_model.msgpack` (mini-1, mega-1,
mega-1-fp16): module names and nesting below reproduce its parameter tree exactly, with the
layers stacked by `nn.scan` (leading layer axis). The math follows dalle-mini's modeling.py
with its published switches (ln_positions='normformer', use_glu, no biases, exact gelu,
absolute positions, final LN without scale); min-dalle's torch modules are the test oracle.

The decoder here runs over a whole token sequence (teacher forcing: tests, init). Sampling
runs the same math one token at a time in `bart_decode`, which is tested against this one.
References: dalle-mini `modeling.py`, kuprel/min-dalle `dalle_bart_{encoder,decoder}.py`,
NormFormer (arXiv 2110.09456).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from edalle.config import BartConfig

Dtype = Any
KV = tuple[jax.Array, jax.Array]  # keys, values: (B, T, H, C) each
INIT = nn.initializers.normal(0.02)  # published init_std is 0.01; 0.02 gives livelier random logits
MASKED = float(np.finfo(np.float32).min)  # replaces (never adds to) masked scores: no -inf, no NaN


def softmax_masked(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax over the last axis of float32 scores, masked entries replaced (never added to)."""
    return jax.nn.softmax(jnp.where(mask, scores, MASKED), axis=-1)


class Attention(nn.Module):
    """Multi-head attention without biases."""

    config: BartConfig
    head_count: int
    dtype: Dtype = jnp.float32

    def setup(self) -> None:
        dense = partial(nn.Dense, self.config.d_model, use_bias=False, dtype=self.dtype, kernel_init=INIT)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = dense(), dense(), dense(), dense()

    def split_heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(x.shape[:2] + (self.head_count, -1))  # (B, T, H, C)

    def project_kv(self, x: jax.Array) -> KV:
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def __call__(self, x: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array) -> jax.Array:
        """x (B, Tq, D) attends to keys/values (B, Tk, H, C); mask broadcasts as (B|1, 1, Tq|1, Tk)."""
        q = self.split_heads(self.q_proj(x))  # (B, Tq, H, C)
        q = q * q.shape[-1] ** -0.5
        # scores in float32: float16 compute would overflow long before the softmax
        scores = jnp.einsum('bqhc,bkhc->bhqk', q, keys, preferred_element_type=jnp.float32)
        weights = softmax_masked(scores, mask).astype(self.dtype)
        out = jnp.einsum('bhqk,bkhc->bqhc', weights, values)  # (B, Tq, H, C)
        return self.out_proj(out.reshape(out.shape[:2] + (-1,)))  # (B, Tq, D)


def layer_norm(dtype: Dtype, name: str, is_scaled: bool = True) -> nn.LayerNorm:
    # The NormFormer extra LNs are published without a scale (force_ln_scale=False).
    return nn.LayerNorm(epsilon=1e-5, use_scale=is_scaled, dtype=dtype, name=name)


class GLU(nn.Module):
    """Gated feed-forward: LN → (gelu(x W0) ⊙ x W1) → LN → W2, as in NormFormer + GLU variants."""

    config: BartConfig
    ffn_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dense = partial(nn.Dense, use_bias=False, dtype=self.dtype, kernel_init=INIT)
        x = layer_norm(self.dtype, 'LayerNorm_0', is_scaled=False)(x)
        w = nn.gelu(dense(self.ffn_dim, name='Dense_0')(x), approximate=False)  # (B, T, F)
        v = dense(self.ffn_dim, name='Dense_1')(x)
        x = layer_norm(self.dtype, 'LayerNorm_1', is_scaled=False)(w * v)
        return dense(self.config.d_model, name='Dense_2')(x)  # (B, T, D)


class EncoderLayer(nn.Module):
    config: BartConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, None]:
        attn = Attention(self.config, self.config.encoder_attention_heads, self.dtype, name='FlaxBartAttention_0')
        h = layer_norm(self.dtype, 'LayerNorm_0', is_scaled=False)(x)
        h = attn(h, *attn.project_kv(h), mask)
        x = x + layer_norm(self.dtype, 'LayerNorm_1')(h)
        x = x + GLU(self.config, self.config.encoder_ffn_dim, self.dtype, name='GLU_0')(x)
        return x, None


class DecoderLayer(nn.Module):
    config: BartConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, encoder_state: jax.Array, encoder_mask: jax.Array) -> tuple[jax.Array, None]:
        """x (B, T, D) image tokens at positions 0 … T-1; encoder_mask (B, 1, 1, Te) bool."""
        heads = self.config.decoder_attention_heads
        self_attn = Attention(self.config, heads, self.dtype, name='FlaxBartAttention_0')
        cross_attn = Attention(self.config, heads, self.dtype, name='FlaxBartAttention_1')
        token_count = x.shape[1]

        h = layer_norm(self.dtype, 'LayerNorm_0', is_scaled=False)(x)
        causal = jnp.tril(jnp.ones((token_count, token_count), bool))[None, None]  # (1, 1, T, T)
        h = self_attn(h, *self_attn.project_kv(h), causal)
        x = x + layer_norm(self.dtype, 'LayerNorm_1')(h)

        h = layer_norm(self.dtype, 'LayerNorm_2', is_scaled=False)(x)
        h = cross_attn(h, *cross_attn.project_kv(encoder_state), encoder_mask)
        x = x + layer_norm(self.dtype, 'LayerNorm_3')(h)
        x = x + GLU(self.config, self.config.decoder_ffn_dim, self.dtype, name='GLU_0')(x)
        return x, None


def scanned(layer: type[nn.Module], in_axes: tuple, length: int) -> type[nn.Module]:
    return nn.scan(layer, variable_axes={'params': 0}, split_rngs={'params': True}, in_axes=in_axes, length=length)


class EncoderLayers(nn.Module):
    config: BartConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        stack = scanned(EncoderLayer, nn.broadcast, self.config.encoder_layers)
        x, _ = stack(self.config, self.dtype, name='FlaxBartEncoderLayers')(x, mask)
        return x


class DecoderLayers(nn.Module):
    config: BartConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, encoder_state: jax.Array, encoder_mask: jax.Array) -> jax.Array:
        stack = scanned(DecoderLayer, (nn.broadcast, nn.broadcast), self.config.decoder_layers)
        x, _ = stack(self.config, self.dtype, name='FlaxBartDecoderLayers')(x, encoder_state, encoder_mask)
        return x


class Encoder(nn.Module):
    config: BartConfig
    dtype: Dtype = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.embed_tokens = nn.Embed(c.encoder_vocab_size, c.d_model, embedding_init=INIT, dtype=self.dtype)
        self.embed_positions = nn.Embed(c.max_text_length, c.d_model, embedding_init=INIT, dtype=self.dtype)
        self.layernorm_embedding = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype)
        self.layers = EncoderLayers(c, self.dtype)
        self.final_ln = nn.LayerNorm(epsilon=1e-5, use_scale=False, dtype=self.dtype)

    def __call__(self, text_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        x = self.embed_tokens(text_ids) + self.embed_positions(jnp.arange(text_ids.shape[1]))  # (B, Te, D)
        x = self.layers(self.layernorm_embedding(x), attention_mask.astype(bool)[:, None, None, :])
        return self.final_ln(x)


class Decoder(nn.Module):
    config: BartConfig
    dtype: Dtype = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.embed_tokens = nn.Embed(c.image_vocab_size + 1, c.d_model, embedding_init=INIT, dtype=self.dtype)
        self.embed_positions = nn.Embed(c.image_length, c.d_model, embedding_init=INIT, dtype=self.dtype)
        self.layernorm_embedding = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype)
        self.layers = DecoderLayers(c, self.dtype)
        self.final_ln = nn.LayerNorm(epsilon=1e-5, use_scale=False, dtype=self.dtype)

    def __call__(self, image_ids: jax.Array, encoder_state: jax.Array, encoder_mask: jax.Array) -> jax.Array:
        positions = jnp.arange(image_ids.shape[1])
        x = self.layernorm_embedding(self.embed_tokens(image_ids) + self.embed_positions(positions))  # (B, T, D)
        x = self.layers(x, encoder_state, encoder_mask.astype(bool)[:, None, None, :])
        return self.final_ln(x)


class BartModel(nn.Module):
    config: BartConfig
    dtype: Dtype = jnp.float32

    def setup(self) -> None:
        self.encoder = Encoder(self.config, self.dtype)
        self.decoder = Decoder(self.config, self.dtype)


class DalleBart(nn.Module):
    """Top level of the published tree: `model/{encoder,decoder}` and `lm_head`."""

    config: BartConfig
    dtype: Dtype = jnp.float32

    def setup(self) -> None:
        self.model = BartModel(self.config, self.dtype)
        self.lm_head = nn.Dense(self.config.image_vocab_size + 1, use_bias=False, dtype=self.dtype, kernel_init=INIT)

    def encode(self, text_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        return self.model.encoder(text_ids, attention_mask)  # (B, Te, D)

    def decode(self, image_ids: jax.Array, encoder_state: jax.Array, encoder_mask: jax.Array) -> jax.Array:
        """Logits (B, T, V+1) for `image_ids` (B, T) at positions 0 … T-1, causally masked."""
        return self.lm_head(self.model.decoder(image_ids, encoder_state, encoder_mask))

    def __call__(self, text_ids, attention_mask, image_ids) -> jax.Array:
        return self.decode(image_ids, self.encode(text_ids, attention_mask), attention_mask)


def init_params(config: BartConfig, seed: int = 0) -> dict:
    """Seeded random weights (float32) in the published layout."""
    text_ids = jnp.ones((1, config.max_text_length), jnp.int32)
    image_ids = jnp.zeros((1, 1), jnp.int32)
    init = jax.jit(partial(DalleBart(config).init, method=DalleBart.__call__))
    return init(jax.random.PRNGKey(seed), text_ids, text_ids, image_ids)['params']


@partial(jax.jit, static_argnames=('config', 'dtype'))
def encode(params: dict, config: BartConfig, text_ids, attention_mask, dtype: Dtype = jnp.float32) -> jax.Array:
    """Encoder output (B, Te, D) for text ids (B, Te); `attention_mask` is 1 on real tokens, 0 on padding."""
    return DalleBart(config, dtype).apply({'params': params}, text_ids, attention_mask, method=DalleBart.encode)


@partial(jax.jit, static_argnames=('config', 'dtype'))
def teacher_forced_logits(
    params: dict, config: BartConfig, encoder_state, encoder_mask, image_ids, dtype: Dtype = jnp.float32
) -> jax.Array:
    """Logits (B, T, V+1) for a whole image token sequence (start token first), causally masked."""
    module = DalleBart(config, dtype)
    return module.apply({'params': params}, image_ids, encoder_state, encoder_mask, method=DalleBart.decode)
