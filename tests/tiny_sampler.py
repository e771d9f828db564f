"""The tiny DalleBart, prepared for sampling, with three prompts: built once per test session.

Shared by the sampling test modules: compiled programs are cached per process anyway, and
this keeps the random weights and prompts (so the tokens they give) the same in all of them.
"""

from __future__ import annotations

from functools import cache

import jax.numpy as jnp
import numpy as np

from edalle.config import BART_CONFIGS
from edalle.models.bart import encode, init_params, teacher_forced_logits
from edalle.models.sampling import SamplerWeights, prepare_sampler

CONFIG = BART_CONFIGS['tiny']


@cache
def tiny_sampler() -> dict:
    """Params, sampler weights, three prompts of different lengths (M, 64) and the empty prompt (64,)."""
    rng = np.random.default_rng(0)
    text_ids = np.full((3, CONFIG.max_text_length), CONFIG.pad_token_id, np.int32)
    for row, length in enumerate((6, 9, 4)):
        text_ids[row, :length] = [0, *rng.integers(3, CONFIG.encoder_vocab_size, length - 2), 2]
    uncond_ids = np.full(CONFIG.max_text_length, CONFIG.pad_token_id, np.int32)
    uncond_ids[:2] = [0, 2]
    params = init_params(CONFIG, seed=0)
    weights: SamplerWeights = prepare_sampler(params, CONFIG)
    return dict(
        params=params,
        weights=weights,
        text_ids=text_ids,
        text_mask=(text_ids != CONFIG.pad_token_id).astype(np.int32),
        uncond_ids=uncond_ids,
        uncond_mask=(uncond_ids != CONFIG.pad_token_id).astype(np.int32),
    )


def teacher_forced_codebook_logits(tiny: dict, text_ids, text_mask, tokens: np.ndarray) -> np.ndarray:
    """The Flax whole-sequence decoder's logits (R, 256, K) over the codebook for image tokens (R, 256),
    row r conditioned on text r: the independent reference the sampler's cached loop is checked against."""
    encoder_state = encode(tiny['params'], CONFIG, text_ids, text_mask)
    start = np.full((tokens.shape[0], 1), CONFIG.decoder_start_token_id, np.int32)
    image_ids = np.concatenate([start, tokens[:, :-1]], axis=1)
    logits = teacher_forced_logits(tiny['params'], CONFIG, encoder_state, jnp.asarray(text_mask), image_ids)
    return np.asarray(logits[..., : CONFIG.image_vocab_size])


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """In float64, so a reference sum of many log-probabilities adds no rounding of its own."""
    x = np.asarray(logits, np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
