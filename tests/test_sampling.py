"""Sampling: filters on hand-made logits, the loop on a fake model, the real loop on the tiny config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_sampler import tiny_sampler

from edalle.config import BART_CONFIGS
from edalle.models.bart import encode, teacher_forced_logits
from edalle.models.sampling import (
    WHOLE_VOCABULARY,
    DecodeState,
    RowControls,
    SamplingSettings,
    apply_top_k,
    apply_top_p,
    bucket_size,
    filtered_logits,
    generate_image_tokens,
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


def test_per_row_top_k_keeps_each_rows_k_largest_and_their_ties():
    rng = np.random.default_rng(1)
    rows, vocab = 64, 200
    logits = rng.normal(0, 2, (rows, vocab)).astype(np.float32)
    logits[::2] = np.round(logits[::2])  # many ties
    logits[1::4, :20] = -INF  # filtered before
    k = rng.choice([1, 2, 5, 50, 199, 200, 250, WHOLE_VOCABULARY], rows).astype(np.int32)
    got = np.asarray(apply_top_k(jnp.asarray(logits), jnp.asarray(k))) > -INF
    kth = -np.sort(-logits, axis=1)[np.arange(rows), np.minimum(k, vocab) - 1]
    finite = logits > -INF
    np.testing.assert_array_equal(got, (logits >= kth[:, None]) & finite)
    np.testing.assert_array_equal(got[k >= vocab], finite[k >= vocab])  # k beyond the row: the row whole
    assert (got.sum(axis=1) >= np.minimum(k, finite.sum(axis=1))).all()


def sorted_top_p(logits: jax.Array, top_p: jax.Array) -> jax.Array:
    """The nucleus by sorting each row and summing its probabilities in order: the rule `apply_top_p` bisects."""
    sorted_logits = -jnp.sort(-logits, axis=-1)  # (B, V) descending
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_above = jnp.cumsum(probs, axis=-1) - probs
    threshold = jnp.min(jnp.where(mass_above < top_p[:, None], sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def test_top_p_bisection_equals_the_sort_per_row():
    rng = np.random.default_rng(2)
    rows, vocab = 192, 300
    logits = rng.normal(0, 3, (rows, vocab)).astype(np.float32)
    logits[::3] = np.round(logits[::3])  # many ties
    logits[1::3, rng.integers(0, vocab, 150)] = -INF  # filtered by top-k first
    top_p = rng.uniform(0, 1, rows).astype(np.float32)
    top_p[::8], top_p[1::8] = 1.0, 1e-6
    got = np.asarray(apply_top_p(jnp.asarray(logits), jnp.asarray(top_p))) > -INF
    want = np.asarray(sorted_top_p(jnp.asarray(logits), jnp.asarray(top_p))) > -INF
    # rows where a token's mass above sits within float32 rounding of top-p may go either way in either
    # rule (their sums add in different orders): compare the rest, nearly all rows
    probs = np.exp(logits - logits.max(axis=1, keepdims=True), dtype=np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    mass_above = np.stack([(probs[r][None, :] * (logits[r][None, :] > logits[r][:, None])).sum(axis=1) for r in range(rows)])
    margin = np.minimum(1e-5, top_p / 2)[:, None]
    clear = (np.abs(mass_above - top_p[:, None]) > margin).all(axis=1) & (top_p < 1.0)
    assert clear.sum() >= (top_p < 1.0).sum() - 4
    np.testing.assert_array_equal(got[clear], want[clear])
    # top-p 1 keeps every code; the sorted sum can reach 1 early in float32 and cut a tail of the least likely
    np.testing.assert_array_equal(got[top_p == 1.0], logits[top_p == 1.0] > -INF)
    assert (want[top_p == 1.0].sum(axis=1) < got[top_p == 1.0].sum(axis=1)).any()
    greedy = top_p == 1e-6  # the most likely code alone, with its ties
    np.testing.assert_array_equal(got[greedy], logits[greedy] == logits[greedy].max(axis=1, keepdims=True))


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


def fake_state(prev_token: jax.Array) -> DecodeState:
    """A loop state for `fake_tokens_to_logits`: one seed per row (0, 1, …), its model a call counter."""
    rows = prev_token.shape[0]
    return DecodeState(
        index=jnp.array(0, jnp.int32),
        prev_token=prev_token,
        keys=jax.vmap(jax.random.PRNGKey)(jnp.arange(rows, dtype=jnp.uint32)),
        model=jnp.array(0),
    )


@pytest.mark.parametrize('cond_scale, step', [(1.0, 1), (3.0, 1), (0.0, 2)])
def test_sample_loop_on_a_fake_model(cond_scale, step):
    start = jnp.array([0, 3], jnp.int32)
    state = fake_state(start)
    controls = RowControls.uniform(2, 5, SamplingSettings(top_k=1, cond_scale=cond_scale))
    state, tokens, _ = sample_loop(fake_tokens_to_logits, state, 5, controls, use_top_p=False, codebook_count=8)
    expected = [[(s + step * (i + 1)) % 8 for i in range(5)] for s in (0, 3)]
    assert np.asarray(tokens).tolist() == expected
    assert int(state.model) == 5 and int(state.index) == 5
    assert np.asarray(state.prev_token).tolist() == [expected[0][-1], expected[1][-1]]


def test_sample_loop_forces_tokens_and_reports_their_log_likelihood():
    state = fake_state(jnp.array([0, 3], jnp.int32))
    forced, mask = np.zeros((2, 5), np.int32), np.zeros((2, 5), bool)
    forced[0, 2], forced[1, 0], forced[1, 4] = 6, 3, 7
    mask[0, 2] = mask[1, 0] = mask[1, 4] = True
    controls = RowControls.uniform(2, 5, SamplingSettings(top_k=1, cond_scale=1.0))
    controls = controls.replace(forced_tokens=forced, forced_mask=mask, score_mask=mask)
    _, tokens, scored = sample_loop(fake_tokens_to_logits, state, 5, controls, use_top_p=False, codebook_count=8)
    assert np.asarray(tokens).tolist() == [[1, 2, 6, 7, 0], [3, 4, 5, 6, 7]]  # each forced token is fed on
    # the conditional rows say `previous + 1` with logit 10 among 8 codes; only row 1's last forced token agrees
    log_sum = np.log(np.exp(10.0) + 7)
    want = [[0, 0, -log_sum, 0, 0], [-log_sum, 0, 0, 0, 10 - log_sum]]
    np.testing.assert_allclose(np.asarray(scored), want, rtol=1e-6, atol=2e-6)  # float32 log-sum-exp near 10


def test_sample_loop_draws_only_from_the_top_k():
    state = fake_state(jnp.zeros(64, jnp.int32))

    def flat_logits(model, tokens, index):  # ranks 0 > 1 > 2 > … with small gaps
        return jnp.broadcast_to(-0.01 * jnp.arange(10.0), (tokens.shape[0], 10)), model

    controls = RowControls.uniform(64, 4, SamplingSettings(top_k=3))
    _, tokens, _ = sample_loop(flat_logits, state, 4, controls, use_top_p=False, codebook_count=10)
    assert set(np.asarray(tokens).ravel().tolist()) == {0, 1, 2}


def test_bucket_sizes():
    assert [bucket_size(n) for n in (1, 2, 3, 5, 9, 10, 17, 64, 65, 130)] == [1, 2, 4, 9, 9, 16, 32, 64, 128, 192]
    assert bucket_size(2, (2, 4)) == 2 and bucket_size(5, (2, 4)) == 8


@pytest.fixture(scope='module')
def tiny() -> dict:
    return tiny_sampler()


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
