"""Sampling: filters on hand-made logits, the loop on a fake model, the real loop on the tiny config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edalle.config import BART_CONFIGS
from edalle.models.bart import encode, init_params, teacher_forced_logits
from edalle.models.sampling import (
    DecodeState,
    SamplingSettings,
    apply_top_k,
    apply_top_p,
    bucket_size,
    filtered_logits,
    generate_image_tokens,
    prepare_sampler,
    sample_loop,
    superconditioned_logits,
)

CONFIG = BART_CONFIGS['tiny']
INF = np.inf


def kept(logits) -> list[bool]:
    return (np.asarray(logits) > -INF).tolist()


def test_top_k_keeps_the_k_largest():
    logits = jnp.array([[1.0, 5.0, 3.0, 2.0, 4.0], [0.0, -1.0, 7.0, 7.0, 2.0]])
    out = apply_top_k(logits, 2)
    np.testing.assert_array_equal(out, [[-INF, 5, -INF, -INF, 4], [-INF, -INF, 7, 7, -INF]])
    assert kept(apply_top_k(logits, 1)) == [[False, True, False, False, False], [False, False, True, True, False]]
    np.testing.assert_array_equal(apply_top_k(logits, None), logits)
    np.testing.assert_array_equal(apply_top_k(logits, 5), logits)


def test_top_p_keeps_the_nucleus():
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.15, 0.1], [0.05, 0.25, 0.6, 0.1]]))
    # probability mass ranked above each token: row 0 [0, .5, .75, .9], row 1 [.95, .6, 0, .85]
    assert kept(apply_top_p(logits, 0.55)) == [[True, True, False, False], [False, False, True, False]]
    assert kept(apply_top_p(logits, 0.45)) == [[True, False, False, False], [False, False, True, False]]
    assert kept(apply_top_p(logits, 0.8)) == [[True, True, True, False], [False, True, True, False]]
    assert kept(apply_top_p(logits, 1.0)) == [[True] * 4, [True] * 4]
    assert kept(apply_top_p(logits, 1e-6)) == [[True, False, False, False], [False, False, True, False]]
    np.testing.assert_array_equal(apply_top_p(logits, 0.8)[0, :3], logits[0, :3])  # kept logits unchanged
    tied = jnp.log(jnp.array([[0.5, 0.2, 0.2, 0.1]]))
    assert kept(apply_top_p(tied, 0.55)) == [[True, True, True, False]]  # a tie with the last kept stays


def test_temperature_then_top_k_then_top_p():
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.15, 0.1]]))
    np.testing.assert_allclose(filtered_logits(logits, None, None, 2.0), logits / 2.0)
    # a hot temperature flattens the distribution, so the same nucleus holds more tokens
    assert kept(filtered_logits(logits, None, 0.6, 1.0)) == [[True, True, False, False]]
    assert kept(filtered_logits(logits, None, 0.6, 100.0)) == [[True, True, True, False]]
    assert kept(filtered_logits(logits, 3, 0.99, 1.0)) == [[True, True, True, False]]


def test_superconditioning_arithmetic():
    cond, uncond = jnp.array([[1.0, 2.0, -3.0]]), jnp.array([[0.0, 4.0, -3.0]])
    np.testing.assert_allclose(superconditioned_logits(cond, uncond, 10.0), [[10.0, -16.0, -3.0]])
    np.testing.assert_allclose(superconditioned_logits(cond, uncond, 1.0), cond)
    np.testing.assert_allclose(superconditioned_logits(cond, uncond, 0.0), uncond)


def fake_tokens_to_logits(call_count: jax.Array, tokens: jax.Array, index: jax.Array):
    """Conditional rows say `token + 1`, unconditional rows `token + 2`; code 9 is out of the codebook."""
    vocab = 10
    row_count = tokens.shape[0] // 2
    cond = jax.nn.one_hot((tokens[:row_count] + 1) % 8, vocab) * 10.0
    uncond = jax.nn.one_hot((tokens[row_count:] + 2) % 8, vocab) * 10.0
    logits = jnp.concatenate([cond, uncond]).at[:, 9].set(100.0)  # largest, but cut by the codebook
    return logits, call_count + 1


@pytest.mark.parametrize('cond_scale, step', [(1.0, 1), (3.0, 1), (0.0, 2)])
def test_sample_loop_on_a_fake_model(cond_scale, step):
    start = jnp.array([0, 3], jnp.int32)
    state = DecodeState(
        index=jnp.array(0, jnp.int32),
        prev_token=start,
        keys=jax.vmap(jax.random.PRNGKey)(jnp.arange(2, dtype=jnp.uint32)),
        model=jnp.array(0),
    )
    settings = dict(top_k=1, top_p=None, temperature=1.0, cond_scale=cond_scale)
    state, tokens = sample_loop(fake_tokens_to_logits, state, 5, codebook_count=8, **settings)
    expected = [[(s + step * (i + 1)) % 8 for i in range(5)] for s in (0, 3)]
    assert np.asarray(tokens).tolist() == expected
    assert int(state.model) == 5 and int(state.index) == 5
    assert np.asarray(state.prev_token).tolist() == [expected[0][-1], expected[1][-1]]


def test_sample_loop_draws_only_from_the_top_k():
    state = DecodeState(
        index=jnp.array(0, jnp.int32),
        prev_token=jnp.zeros(64, jnp.int32),
        keys=jax.vmap(jax.random.PRNGKey)(jnp.arange(64, dtype=jnp.uint32)),
        model=jnp.array(0),
    )

    def flat_logits(model, tokens, index):  # ranks 0 > 1 > 2 > … with small gaps
        return jnp.broadcast_to(-0.01 * jnp.arange(10.0), (tokens.shape[0], 10)), model

    settings = dict(top_k=3, top_p=None, temperature=1.0, cond_scale=10.0)
    _, tokens = sample_loop(flat_logits, state, 4, codebook_count=10, **settings)
    assert set(np.asarray(tokens).ravel().tolist()) == {0, 1, 2}


def test_bucket_sizes():
    assert [bucket_size(n) for n in (1, 2, 3, 5, 9, 10, 17, 64, 65, 130)] == [1, 2, 4, 9, 9, 16, 32, 64, 128, 192]
    assert bucket_size(2, (2, 4)) == 2 and bucket_size(5, (2, 4)) == 8


@pytest.fixture(scope='module')
def tiny() -> dict:
    rng = np.random.default_rng(0)
    text_ids = np.full((3, CONFIG.max_text_length), CONFIG.pad_token_id, np.int32)
    for row, length in enumerate((6, 9, 4)):
        text_ids[row, :length] = [0, *rng.integers(3, CONFIG.encoder_vocab_size, length - 2), 2]
    uncond_ids = np.full(CONFIG.max_text_length, CONFIG.pad_token_id, np.int32)
    uncond_ids[:2] = [0, 2]
    params = init_params(CONFIG, seed=0)
    return dict(
        params=params,
        weights=prepare_sampler(params, CONFIG),
        text_ids=text_ids,
        text_mask=(text_ids != CONFIG.pad_token_id).astype(np.int32),
        uncond_ids=uncond_ids,
        uncond_mask=(uncond_ids != CONFIG.pad_token_id).astype(np.int32),
    )


def generate(tiny: dict, rows: slice, seeds, candidate_count: int, **kwargs) -> np.ndarray:
    return generate_image_tokens(
        tiny['weights'],
        CONFIG,
        tiny['text_ids'][rows],
        tiny['text_mask'][rows],
        tiny['uncond_ids'],
        tiny['uncond_mask'],
        seeds,
        candidate_count,
        **kwargs,
    )


def test_tiny_seeds_are_deterministic_and_batch_independent(tiny):
    seeds = [[11, 12, 13], [21, 22, 23]]
    batch = generate(tiny, slice(0, 2), seeds, 3)  # 6 rows: bucket 9, prompts bucket 4
    assert batch.shape == (2, 3, CONFIG.image_length) and batch.dtype == np.int32
    assert batch.min() >= 0 and batch.max() < CONFIG.image_vocab_size
    np.testing.assert_array_equal(generate(tiny, slice(0, 2), seeds, 3), batch)
    assert len({row.tobytes() for row in batch.reshape(6, -1)}) == 6  # different seeds, different images
    # the same prompt + seed alone (bucket 1, prompts bucket 2) and in other company (3 prompts × 2)
    np.testing.assert_array_equal(generate(tiny, slice(1, 2), [22], 1)[0, 0], batch[1, 1])
    mixed = generate(tiny, slice(0, 3), [[13, 99], [1, 21], [5, 6]], 2)
    np.testing.assert_array_equal(mixed[0, 0], batch[0, 2])
    np.testing.assert_array_equal(mixed[1, 1], batch[1, 0])


def test_tiny_chunked_progress_matches_and_codebook_bounds(tiny):
    reports = []
    settings = SamplingSettings(top_k=None, top_p=0.9, temperature=0.8, cond_scale=3.0)
    kwargs = dict(settings=settings, codebook_count=100)
    chunked = generate(tiny, slice(0, 1), [7], 1, progress=lambda done, total: reports.append((done, total)), **kwargs)
    assert reports == [(32 * i, 256) for i in range(1, 9)]
    np.testing.assert_array_equal(chunked, generate(tiny, slice(0, 1), [7], 1, **kwargs))
    assert chunked.max() < 100


def test_tiny_cached_decoding_matches_teacher_forcing(tiny):
    """Greedy tokens from the KV-cache loop are the argmax of the whole-sequence (uncached) logits."""
    cond_scale = 4.0
    settings = SamplingSettings(top_k=1, cond_scale=cond_scale)
    tokens = generate(tiny, slice(0, 1), [0], 1, settings=settings)[0, 0]  # (256,)
    text_ids = np.stack([tiny['text_ids'][0], tiny['uncond_ids']])
    text_mask = np.stack([tiny['text_mask'][0], tiny['uncond_mask']])
    encoder_state = encode(tiny['params'], CONFIG, text_ids, text_mask)
    image_ids = np.concatenate([[CONFIG.decoder_start_token_id], tokens[:-1]])
    logits = teacher_forced_logits(tiny['params'], CONFIG, encoder_state, text_mask, np.stack([image_ids] * 2))
    logits = superconditioned_logits(logits[0, :, :1024], logits[1, :, :1024], cond_scale)  # (256, 1024)
    np.testing.assert_array_equal(np.asarray(logits).argmax(-1), tokens)
