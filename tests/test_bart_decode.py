"""The one-token decoder step against the whole-sequence Flax decoder it was written from.

`bart_decode.decode_step` re-implements the decoder for speed (per-layer fused weights, a
(B, H, S, C) cache, cross-attention keys shared per prompt); `bart.teacher_forced_logits`
is the reference, itself tested against min-dalle in test_bart.py. Feeding the step the
same tokens one at a time must give the same logits at every position, for every row,
whatever prompt each row belongs to.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bart_weights import perturbed_params

from edalle.config import BART_CONFIGS
from edalle.models.bart import encode, teacher_forced_logits
from edalle.models.bart_decode import decode_block, decode_step, grow_cache, prepare_decoder, start_cache

CONFIG = BART_CONFIGS['tiny']
STEPS = 40  # positions compared; the cache still spans all 256


@pytest.fixture(scope='module')
def params() -> dict:
    return perturbed_params(CONFIG, seed=1)


@pytest.fixture(scope='module')
def prompts() -> tuple[np.ndarray, np.ndarray]:
    """Three prompts of different lengths (row 0 plays the unconditional one)."""
    rng = np.random.default_rng(2)
    ids = np.full((3, CONFIG.max_text_length), CONFIG.pad_token_id, np.int32)
    for row, length in enumerate((2, 9, 5)):
        ids[row, :length] = [0, *rng.integers(3, CONFIG.encoder_vocab_size, length - 2), 2]
    return ids, (ids != CONFIG.pad_token_id).astype(np.int32)


def stepped_logits(weights, encoder_state, text_mask, row_prompt, image_ids) -> np.ndarray:
    """Feed `image_ids` (R, T) one position at a time; logits (R, T, K)."""

    @jax.jit
    def run(cache, image_ids):
        def step(cache, position):
            logits, cache = decode_step(weights, CONFIG, cache, image_ids[:, position], position)
            return cache, logits

        return jax.lax.scan(step, cache, jnp.arange(image_ids.shape[1]))[1]

    cache = start_cache(weights, CONFIG, encoder_state, text_mask, jnp.asarray(row_prompt))
    return np.asarray(run(cache, image_ids)).transpose(1, 0, 2)


def test_step_by_step_logits_equal_teacher_forcing_for_rows_of_different_prompts(params, prompts):
    text_ids, text_mask = prompts
    encoder_state = encode(params, CONFIG, text_ids, text_mask)  # (3, Te, D)
    row_prompt = np.array([1, 1, 2, 0, 2, 0])  # rows of one prompt share its cross keys/values
    rng = np.random.default_rng(3)
    image_ids = rng.integers(0, CONFIG.image_vocab_size, (len(row_prompt), STEPS)).astype(np.int32)
    image_ids[:, 0] = CONFIG.decoder_start_token_id

    weights = prepare_decoder(params, CONFIG)
    got = stepped_logits(weights, encoder_state, text_mask, row_prompt, image_ids)
    want = teacher_forced_logits(params, CONFIG, encoder_state[row_prompt], jnp.asarray(text_mask[row_prompt]), image_ids)
    want = np.asarray(want)[..., : CONFIG.image_vocab_size]  # the step leaves out the start token's logit
    assert got.shape == want.shape == (len(row_prompt), STEPS, CONFIG.image_vocab_size)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
    # and the check can fail: a row pointed at another prompt no longer matches
    wrong = stepped_logits(weights, encoder_state, text_mask, row_prompt[[2, 1, 0, 3, 4, 5]], image_ids)
    assert np.abs(wrong[0] - want[0]).max() > 100 * 2e-5 * np.abs(want).max()


def blocked_logits(weights, encoder_state, text_mask, row_prompt, image_ids, block: int) -> np.ndarray:
    """Feed `image_ids` (R, T) `block` positions per pass, the cache grown as it fills (as sampling's prefill does)."""
    run = jax.jit(lambda cache, ids, start: decode_block(weights, CONFIG, cache, ids, start))
    cache = start_cache(weights, CONFIG, encoder_state, text_mask, jnp.asarray(row_prompt), length=32)
    out = []
    for start in range(0, image_ids.shape[1], block):
        if cache.keys[0].shape[2] < start + block:
            cache = grow_cache(cache, cache.keys[0].shape[2] + 32)
        logits, cache = run(cache, image_ids[:, start : start + block], start)
        out.append(np.asarray(logits))
    return np.concatenate(out, axis=1)


def test_block_prefill_logits_equal_teacher_forcing_and_the_step(params, prompts):
    """The block pass (many positions per call, at a traced start) is the same decoder as the one-token step."""
    text_ids, text_mask = prompts
    encoder_state = encode(params, CONFIG, text_ids, text_mask)
    row_prompt = np.array([2, 0, 1, 1])
    rng = np.random.default_rng(4)
    image_ids = rng.integers(0, CONFIG.image_vocab_size, (len(row_prompt), STEPS)).astype(np.int32)
    image_ids[:, 0] = CONFIG.decoder_start_token_id

    weights = prepare_decoder(params, CONFIG)
    got = blocked_logits(weights, encoder_state, text_mask, row_prompt, image_ids, block=8)  # 5 passes, 2 cache sizes
    want = teacher_forced_logits(params, CONFIG, encoder_state[row_prompt], jnp.asarray(text_mask[row_prompt]), image_ids)
    want = np.asarray(want)[..., : CONFIG.image_vocab_size]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
    stepped = stepped_logits(weights, encoder_state, text_mask, row_prompt, image_ids)
    np.testing.assert_allclose(got, stepped, rtol=0, atol=2e-6 * np.abs(want).max())
    # and the check can fail: the same tokens one position early do not match
    shifted = blocked_logits(weights, encoder_state, text_mask, row_prompt, image_ids[:, 1:33], block=8)
    assert np.abs(shifted - want[:, 1:33]).max() > 100 * 2e-5 * np.abs(want).max()


def test_weights_are_fused_per_layer_in_the_compute_dtype(params, prompts):
    weights = prepare_decoder(params, CONFIG, jnp.bfloat16)
    d, f = CONFIG.d_model, CONFIG.decoder_ffn_dim
    assert len(weights.layers) == CONFIG.decoder_layers
    layer = weights.layers[0]
    assert layer.qkv.shape == (d, 3 * d) and layer.glu_in.shape == (d, 2 * f) and layer.qkv.dtype == jnp.bfloat16
    assert weights.lm_head.shape == (d, CONFIG.image_vocab_size)  # no column for the start token
    assert all(v.dtype == jnp.float32 for v in layer.norms.values())

    text_ids, text_mask = prompts
    encoder_state = encode(params, CONFIG, text_ids, text_mask)
    image_ids = np.full((2, 8), CONFIG.decoder_start_token_id, np.int32)
    image_ids[:, 1:] = np.arange(14).reshape(2, 7)
    half = stepped_logits(weights, encoder_state, text_mask, np.array([1, 0]), image_ids)
    full = stepped_logits(prepare_decoder(params, CONFIG), encoder_state, text_mask, np.array([1, 0]), image_ids)
    assert half.dtype == jnp.bfloat16
    np.testing.assert_allclose(half.astype(np.float32), full, atol=0.05 * np.abs(full).max())


def test_host_arrays_are_handed_to_the_cpu_backend_without_a_second_copy(params):
    """`on_device` casts and joins into one aligned buffer, which XLA's CPU client adopts as the jax array.

    Before, numpy's 16-byte-aligned arrays were copied by XLA, so a checkpoint being loaded was held
    twice until the transfers let go of the numpy copies. The pointer check fails if a jax upgrade
    starts copying again (then the alignment or `may_alias` needs a second look).
    """
    from edalle.models.bart_decode import HOST_ALIGNMENT, aligned_empty, on_device

    buffer = aligned_empty((3, 5), np.float32)
    assert buffer.ctypes.data % HOST_ALIGNMENT == 0 and buffer.flags.c_contiguous and buffer.shape == (3, 5)

    rng = np.random.default_rng(4)
    parts = [rng.standard_normal((64, n)).astype(np.float32) for n in (16, 32, 8)]
    joined = on_device(parts, jnp.bfloat16)
    assert joined.dtype == jnp.bfloat16 and joined.shape == (64, 56)
    np.testing.assert_array_equal(np.asarray(joined), np.concatenate(parts, axis=1).astype(jnp.bfloat16))
    single = on_device(parts[1])
    np.testing.assert_array_equal(np.asarray(single), parts[1])
    parts[1][:] = 0  # the caller's array is not the one adopted: nothing it does later reaches the weights
    assert np.abs(np.asarray(single)).max() > 0
    if jax.default_backend() == 'cpu':  # what `on_device` relies on: an aligned buffer is adopted, not copied
        adopted = jax.device_put(buffer, may_alias=True)
        assert adopted.unsafe_buffer_pointer() == buffer.ctypes.data
        unaligned = np.empty(16 * 1024 + 1, np.float32)[1:]  # 4 bytes off numpy's own 16-byte alignment
        assert jax.device_put(unaligned, may_alias=True).unsafe_buffer_pointer() != unaligned.ctypes.data

    weights = prepare_decoder(params, CONFIG)
    assert all(layer.qkv.unsafe_buffer_pointer() % HOST_ALIGNMENT == 0 for layer in weights.layers)
