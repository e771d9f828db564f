"""Requests in one sampling call: per-row knobs, negative prompts, forced tokens, suffix scores, previews.

The tiny DalleBart with random weights. Most calls here have 5–9 candidate rows and at most
four distinct texts (row bucket 9, text bucket 4, as `test_sampling`'s batch test), so the
compiled programs are shared and only the alone-runs and the prefill add compiles.
"""

from __future__ import annotations

import numpy as np
import pytest
from tiny_sampler import CONFIG, log_softmax, teacher_forced_codebook_logits, tiny_sampler

from edalle.models import sampling
from edalle.models.sampling import (
    PREFILL_BLOCK,
    WHOLE_VOCABULARY,
    SampleRequest,
    SampleResult,
    SamplingError,
    SamplingSettings,
    lay_out,
    sample_image_tokens,
    superconditioned_logits,
)

LENGTH = CONFIG.image_length  # 256 tokens, a 16 × 16 grid
KEPT_ROWS = 12  # a variation that keeps 12 of the 16 token rows


@pytest.fixture(scope='module')
def tiny() -> dict:
    return tiny_sampler()


def request(
    tiny: dict, prompt: int, seeds, settings: SamplingSettings | None = None, negative: int | None = None, **kwargs
) -> SampleRequest:
    """Prompt `prompt` of the tiny set; `negative` another prompt's text as the negative (-1: the empty prompt)."""
    if negative == -1:
        kwargs |= dict(negative_ids=tiny['uncond_ids'], negative_mask=tiny['uncond_mask'])
    elif negative is not None:
        kwargs |= dict(negative_ids=tiny['text_ids'][negative], negative_mask=tiny['text_mask'][negative])
    return SampleRequest(
        tiny['text_ids'][prompt], tiny['text_mask'][prompt], seeds, settings or SamplingSettings(), **kwargs
    )


def sample(tiny: dict, requests: list[SampleRequest], **kwargs) -> SampleResult:
    return sample_image_tokens(tiny['weights'], CONFIG, requests, tiny['uncond_ids'], tiny['uncond_mask'], **kwargs)


# ---------------------------------------------------------------------------------- layout (host only)


def test_layout_shares_texts_and_points_each_twin_at_its_negative(tiny):
    requests = [
        request(tiny, 0, [1, 2]),
        request(tiny, 0, [3], negative=2),
        request(tiny, 1, [4], negative=-1),  # the empty prompt as an explicit negative
        request(tiny, 1, [5], SamplingSettings(top_k=None, top_p=0.5, temperature=0.5, cond_scale=2.0), negative=2),
    ]
    batch = lay_out(requests, CONFIG, tiny['uncond_ids'], tiny['uncond_mask'], 1024)
    # texts: the empty prompt, prompt 0, prompt 2 (a negative), prompt 1: each once
    assert batch.texts.shape == (4, CONFIG.max_text_length)
    np.testing.assert_array_equal(batch.texts[[1, 2, 3]], tiny['text_ids'][[0, 2, 1]])
    assert batch.prompt_index[:5].tolist() == [1, 1, 1, 3, 3] and batch.twin_index[:5].tolist() == [0, 0, 2, 0, 2]
    assert batch.prompt_index.shape == (9,) and batch.twin_index[5:].tolist() == [0] * 4  # padding rows
    assert batch.controls.top_k[:5].tolist() == [50, 50, 50, 50, WHOLE_VOCABULARY]
    assert batch.controls.top_p[:5].tolist() == [1, 1, 1, 1, 0.5] and batch.use_top_p
    assert batch.controls.temperature[4] == 0.5 and batch.controls.cond_scale[4] == 2.0
    assert [(rows.start, rows.stop) for rows in batch.rows] == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert batch.prefix_length == 0 and not batch.controls.forced_mask.any()


def test_layout_of_forced_tokens_prefix_and_scored_positions(tiny):
    forced = np.arange(LENGTH) % 1000
    prefix_mask = np.arange(LENGTH) < 5 * 16 + 3  # 83 leading forced positions
    region = np.ones((16, 16), bool)
    region[4:8, 4:12] = False  # sampled inside rows 4–7, columns 4–11
    requests = [
        request(tiny, 0, [1], forced_tokens=forced, forced_mask=prefix_mask),
        request(tiny, 1, [2, 3], forced_tokens=forced, forced_mask=region.ravel(), score_forced_suffix=True),
    ]
    batch = lay_out(requests, CONFIG, tiny['uncond_ids'], tiny['uncond_mask'], 1024)
    assert batch.prefix_length == 4 * PREFILL_BLOCK  # the shortest leading run (4 rows + 4), in whole blocks
    assert batch.scored == [False, True]
    first_sampled = 4 * 16 + 4
    want = region.ravel() & (np.arange(LENGTH) > first_sampled)
    np.testing.assert_array_equal(batch.controls.score_mask[1], want)
    np.testing.assert_array_equal(batch.controls.score_mask[2], want)
    assert not batch.controls.score_mask[0].any()
    np.testing.assert_array_equal(batch.controls.forced_tokens[0], np.where(prefix_mask, forced, 0))
    assert lay_out(requests, CONFIG, tiny['uncond_ids'], tiny['uncond_mask'], 1024, prefill=False).prefix_length == 0
    # the prefill runs once per distinct (text, prefix): the two candidates of request 1 share theirs,
    # and all three twins theirs (the empty prompt, the same 64 tokens); the padding row and its twin make one more
    source = batch.prefill_sources  # (8,): conditional rows 0–3, then the twins 4–7
    assert source[1] == source[2] and source[4] == source[5] == source[6] and source[3] == source[7]
    assert len({source[0], source[1], source[4], source[3]}) == 4 and len(set(source)) == 4
    assert batch.prefill_representatives.shape == (4,) and (source[batch.prefill_representatives] == np.arange(4)).all()


def test_bad_requests_get_a_clear_error(tiny):
    with pytest.raises(SamplingError, match='top-k'):
        SamplingSettings(top_k=0)
    with pytest.raises(SamplingError, match='top-p'):
        SamplingSettings(top_p=1.5)
    with pytest.raises(SamplingError, match='temperature'):
        SamplingSettings(temperature=0.0)
    with pytest.raises(SamplingError, match='seed'):
        request(tiny, 0, [])
    with pytest.raises(SamplingError, match='scored'):
        request(tiny, 0, [1], score_forced_suffix=True)
    with pytest.raises(SamplingError, match='both'):
        request(tiny, 0, [1], forced_tokens=np.zeros(LENGTH, np.int32))
    out_of_range = request(tiny, 0, [1], forced_tokens=np.full(LENGTH, 500), forced_mask=np.ones(LENGTH, bool))
    with pytest.raises(SamplingError, match='codes from 0 to 99'):
        lay_out([out_of_range], CONFIG, tiny['uncond_ids'], tiny['uncond_mask'], 100)


# ---------------------------------------------------------------------------------- per-row knobs


def mixed_requests(tiny: dict, top_k: int, top_p: float, temperature: float, scale: float) -> list[SampleRequest]:
    """Eight rows whose knobs differ per request; the last two are also sampled alone."""
    return [
        request(tiny, 0, [1, 2], SamplingSettings(top_k=1, cond_scale=scale)),
        request(tiny, 1, [3, 4], SamplingSettings(top_k=None, top_p=1e-6)),
        request(tiny, 0, [5], SamplingSettings(cond_scale=0.0)),
        request(tiny, 1, [5], SamplingSettings(cond_scale=0.0)),
        request(tiny, 2, [6], SamplingSettings(top_k=top_k, temperature=temperature, cond_scale=scale)),
        request(tiny, 2, [7], SamplingSettings(top_k=None, top_p=top_p, temperature=1.2, cond_scale=5.0)),
    ]


@pytest.fixture(scope='module')
def mixed(tiny) -> SampleResult:
    return sample(tiny, mixed_requests(tiny, top_k=20, top_p=0.9, temperature=0.7, scale=10.0))


def test_each_rows_knobs_reach_the_sampler(mixed):
    greedy, nucleus, scale_zero_a, scale_zero_b, hot, top_p = mixed.tokens
    np.testing.assert_array_equal(greedy[0], greedy[1])  # top-k 1: the seed no longer matters
    np.testing.assert_array_equal(nucleus[0], nucleus[1])  # top-p 1e-6: nor here
    np.testing.assert_array_equal(scale_zero_a, scale_zero_b)  # scale 0: the prompt no longer matters
    # and the checks can fail: the other rows differ from one another
    rows = [greedy[0], nucleus[0], scale_zero_a[0], hot[0], top_p[0]]
    assert len({row.tobytes() for row in rows}) == len(rows)


def test_a_row_of_a_mixed_batch_equals_the_row_alone(tiny, mixed):
    """Top-k 20 at temperature 0.7, alone (bucket 1, no top-p: another compiled program), and in a batch with top-p on."""
    alone = sample(tiny, [mixed_requests(tiny, top_k=20, top_p=0.9, temperature=0.7, scale=10.0)[4]])
    np.testing.assert_array_equal(alone.tokens[0], mixed.tokens[4])


@pytest.mark.slow  # compiles the one-row program with top-p on
def test_a_top_p_row_of_a_mixed_batch_equals_the_row_alone(tiny, mixed):
    alone = sample(tiny, [mixed_requests(tiny, top_k=20, top_p=0.9, temperature=0.7, scale=10.0)[5]])
    np.testing.assert_array_equal(alone.tokens[0], mixed.tokens[5])


def test_new_knob_values_do_not_compile_again(tiny, mixed):
    compiled = {name: getattr(sampling, name)._cache_size() for name in ('_start_jit', '_decode_jit', '_grow_jit')}
    other = sample(tiny, mixed_requests(tiny, top_k=3, top_p=0.5, temperature=1.5, scale=4.0))
    assert {name: getattr(sampling, name)._cache_size() for name in compiled} == compiled
    assert not np.array_equal(other.tokens[4], mixed.tokens[4]) and not np.array_equal(other.tokens[5], mixed.tokens[5])


# ---------------------------------------------------------------------------------- negative prompts


@pytest.fixture(scope='module')
def negatives(tiny) -> SampleResult:
    return sample(
        tiny,
        [
            request(tiny, 0, [1], negative=0),  # negative = prompt, scale 10
            request(tiny, 0, [1], SamplingSettings(cond_scale=3.0), negative=0),
            request(tiny, 0, [1]),  # no negative
            request(tiny, 0, [2], SamplingSettings(top_k=1, cond_scale=7.0), negative=0),
            request(tiny, 0, [3], SamplingSettings(top_k=1, cond_scale=4.0), negative=2),
            request(tiny, 1, [9]),
            request(tiny, 1, [9], negative=-1),  # the empty prompt, given as a negative
        ],
    )


def test_a_negative_equal_to_the_prompt_gives_the_conditional_tokens(tiny, negatives):
    at_ten, at_three, plain, greedy = (t[0] for t in negatives.tokens[:4])
    np.testing.assert_array_equal(at_ten, at_three)  # uncond = cond: the scale has nothing to push
    assert not np.array_equal(at_ten, plain)  # the empty prompt's push does change the tokens
    cond = teacher_forced_codebook_logits(tiny, tiny['text_ids'][:1], tiny['text_mask'][:1], greedy[None])[0]
    np.testing.assert_array_equal(cond.argmax(-1), greedy)  # greedy tokens are the conditional argmax


def test_negative_prompt_tokens_are_the_superconditioned_teacher_forced_argmax(tiny, negatives):
    tokens = negatives.tokens[4][0]  # prompt 0, negative prompt 2, top-k 1, scale 4
    ids, mask = tiny['text_ids'][[0, 2]], tiny['text_mask'][[0, 2]]
    cond, uncond = teacher_forced_codebook_logits(tiny, ids, mask, np.stack([tokens, tokens]))
    np.testing.assert_array_equal(np.asarray(superconditioned_logits(cond, uncond, 4.0)).argmax(-1), tokens)
    # and the check can fail: against the empty prompt, the argmax differs
    empty = teacher_forced_codebook_logits(tiny, tiny['uncond_ids'][None], tiny['uncond_mask'][None], tokens[None])[0]
    assert (np.asarray(superconditioned_logits(cond, empty, 4.0)).argmax(-1) != tokens).any()


def test_an_empty_negative_changes_nothing(negatives):
    np.testing.assert_array_equal(negatives.tokens[5], negatives.tokens[6])


# ---------------------------------------------------------------------------------- forcing


@pytest.fixture(scope='module')
def picks(tiny) -> list[np.ndarray]:
    """Five candidates sampled freely: the pictures a variation starts from."""
    result = sample(tiny, [request(tiny, 0, [11, 12, 13]), request(tiny, 1, [14, 15])])
    return [*result.tokens[0], *result.tokens[1]]


def kept_rows(tokens: np.ndarray, rows: int) -> dict:
    return dict(forced_tokens=tokens, forced_mask=np.arange(LENGTH) < rows * 16)


def variation_requests(tiny: dict, picks: list[np.ndarray]) -> list[SampleRequest]:
    return [
        request(tiny, 0, [11], **kept_rows(picks[0], KEPT_ROWS)),  # the pick's own seed
        request(tiny, 0, [99], **kept_rows(picks[0], KEPT_ROWS)),  # a new seed
        request(tiny, 0, [12], **kept_rows(picks[1], 7)),
        request(tiny, 1, [14], **kept_rows(picks[3], 5)),  # the call's shortest prefix: 5 rows, 80 positions
        request(tiny, 1, [77], **kept_rows(picks[4], 5)),
    ]


@pytest.fixture(scope='module')
def variations(tiny, picks) -> SampleResult:
    return sample(tiny, variation_requests(tiny, picks))


def test_keeping_the_picks_first_rows_with_its_own_seed_reproduces_it(picks, variations):
    own, new_seed, seven, five, five_new_seed = (t[0] for t in variations.tokens)
    np.testing.assert_array_equal(own, picks[0])
    np.testing.assert_array_equal(seven, picks[1])
    np.testing.assert_array_equal(five, picks[3])
    for tokens, pick, rows in ((new_seed, picks[0], KEPT_ROWS), (five_new_seed, picks[4], 5)):
        np.testing.assert_array_equal(tokens[: rows * 16], pick[: rows * 16])  # the kept rows
        assert (tokens[rows * 16 :] != pick[rows * 16 :]).any()  # a new seed draws the rest anew


def test_block_prefill_gives_the_tokens_of_step_by_step_forcing(tiny, picks, variations):
    stepped = sample(tiny, variation_requests(tiny, picks), prefill=False)
    for a, b in zip(stepped.tokens, variations.tokens, strict=True):
        np.testing.assert_array_equal(a, b)
    again = sample(tiny, variation_requests(tiny, picks))  # and each seed is deterministic
    for a, b in zip(again.tokens, variations.tokens, strict=True):
        np.testing.assert_array_equal(a, b)


REGION = np.ones((16, 16), bool)
REGION[4:8, 4:12] = False  # repaint rows 4–7, columns 4–11: forced elsewhere


@pytest.fixture(scope='module')
def repaint(tiny, picks) -> tuple[list[SampleRequest], SampleResult]:
    rng = np.random.default_rng(5)
    scattered = rng.random(LENGTH) < 0.3
    scattered[:64] = True  # every row of the call keeps the first 4 token rows: a 64-position prefill
    noise = rng.integers(0, CONFIG.image_vocab_size, LENGTH)
    around = dict(forced_tokens=picks[0], forced_mask=REGION.ravel())
    requests = [
        request(tiny, 0, [31], score_forced_suffix=True, **around),
        request(tiny, 0, [32, 33], score_forced_suffix=True, **around),
        request(tiny, 2, [34], forced_tokens=noise, forced_mask=scattered),
        request(tiny, 1, [35], negative=2, score_forced_suffix=True, forced_tokens=noise, forced_mask=scattered),
    ]
    return requests, sample(tiny, requests)


def test_forced_positions_hold_the_forced_tokens(repaint):
    requests, result = repaint
    for r, tokens in zip(requests, result.tokens, strict=True):
        np.testing.assert_array_equal(tokens[:, r.forced_mask[0]], r.forced_tokens[:, r.forced_mask[0]])
    first, second = result.tokens[0][0], result.tokens[1][0]
    assert (first[~REGION.ravel()] != second[~REGION.ravel()]).any()  # inside the region, samples differ
    assert result.suffix_scores[2] is None


def test_suffix_score_equals_the_teacher_forced_log_likelihood(tiny, repaint):
    requests, result = repaint
    for index in (0, 1, 3):
        r, tokens, scores = requests[index], result.tokens[index], result.suffix_scores[index]
        assert scores.shape == (r.candidate_count,) and scores.dtype == np.float64
        ids = np.repeat(r.text_ids[None], r.candidate_count, axis=0)
        mask = np.repeat(r.text_mask[None], r.candidate_count, axis=0)
        log_probs = log_softmax(teacher_forced_codebook_logits(tiny, ids, mask, tokens))  # (N, 256, K), conditional
        picked = np.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]  # (N, 256)
        first_sampled = np.argmin(r.forced_mask, axis=1)[:, None]
        scored = r.forced_mask & (np.arange(LENGTH) > first_sampled)
        want = (picked * scored).sum(axis=1)
        np.testing.assert_allclose(scores, want, rtol=0, atol=1e-4)
    # different repaints of one region score differently (the score reads the sample)
    assert len({float(s) for s in [*result.suffix_scores[0], *result.suffix_scores[1]]}) == 3


# ---------------------------------------------------------------------------------- previews


def test_previews_show_the_tokens_so_far_and_change_nothing(tiny, repaint):
    requests, result = repaint
    seen: list[tuple[int, list[np.ndarray]]] = []
    with_previews = sample(tiny, requests, preview=lambda done, tokens: seen.append((done, tokens)))
    for a, b in zip(with_previews.tokens, result.tokens, strict=True):
        np.testing.assert_array_equal(a, b)  # bit-identical with previews on and off
    assert [done for done, _ in seen] == [64, 96, 128, 160, 192, 224, 256]  # the prefill, then every chunk
    for done, tokens in seen:
        assert [t.shape for t in tokens] == [(r.candidate_count, done) for r in requests]
        for partial, final in zip(tokens, result.tokens, strict=True):
            np.testing.assert_array_equal(partial, final[:, :done])
