"""The mean-colour table of the VQGAN's codes and the previews painted from it, on the tiny VQGAN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edalle.config import VQGAN_CONFIGS
from edalle.models.code_colours import fit_code_colours, paint_tokens
from edalle.models.vqgan import VQGAN


@pytest.fixture(scope='module')
def vqgan() -> VQGAN:
    return VQGAN.random(VQGAN_CONFIGS['tiny'], seed=0)


@pytest.fixture(scope='module')
def colours(vqgan) -> np.ndarray:
    return fit_code_colours(vqgan, seed=3)


def test_the_table_holds_each_codes_mean_patch_colour(vqgan, colours):
    assert colours.shape == (1024, 3) and colours.dtype == np.float32
    assert colours.min() >= 0 and colours.max() <= 1
    assert colours.std(axis=0).min() > 1e-3  # codes differ: the table says something
    # 1024 codes fill exactly four grids, each code once: a code's colour is its own patch's mean
    rng = np.random.default_rng(3)
    first_grid = rng.permutation(1024)[:256]
    with torch.inference_mode():
        pixels = vqgan.decode_tokens(torch.from_numpy(first_grid.reshape(1, 16, 16)))
    patches = F.avg_pool2d(pixels, 16)[0].permute(1, 2, 0).reshape(256, 3).numpy()
    np.testing.assert_allclose(colours[first_grid], patches, rtol=0, atol=1e-5)  # decoded 4 grids at a time there


def test_fitting_is_deterministic_per_seed(vqgan, colours):
    np.testing.assert_array_equal(fit_code_colours(vqgan, seed=3), colours)


def test_painting_is_the_table_lookup_upscaled(colours):
    tokens = np.random.default_rng(0).integers(0, 1024, (2, 3, 256))
    pictures = paint_tokens(tokens, colours, scale=4)
    assert pictures.shape == (2, 3, 64, 64, 3) and pictures.dtype == np.uint8
    want = np.rint(colours[tokens] * 255).astype(np.uint8).reshape(2, 3, 16, 16, 3)
    np.testing.assert_array_equal(pictures[..., ::4, ::4, :], want)
    np.testing.assert_array_equal(pictures[..., 3::4, 3::4, :], want)  # each cell a 4 × 4 block


def test_a_partial_grid_paints_the_rest_grey(colours):
    tokens = np.arange(40)
    picture = paint_tokens(tokens, colours)
    cells = picture.reshape(256, 3)
    np.testing.assert_array_equal(cells[:40], np.rint(colours[:40] * 255).astype(np.uint8))
    assert (cells[40:] == 128).all()
    with pytest.raises(ValueError, match='256 tokens'):
        paint_tokens(np.zeros(257, np.int64), colours)
