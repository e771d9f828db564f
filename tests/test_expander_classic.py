"""The classic method against the original notebook: settings, restoration weights, clamp, loop invariants.

Loops run on a 4×4-token (64 px) source with the tiny VQGAN and CLIP so they stay quick;
the method is size-agnostic, the 256-px source only changes the numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from edalle.config import VQGAN_CONFIGS
from edalle.expander.classic import ClassicSettings, classic_keep_weights, codebook_box, run_classic
from edalle.expander.errors import ExpandCancelled
from edalle.expander.geometry import compute_geometry
from edalle.models.clip import ClipModel
from edalle.models.vqgan import VQGAN


@pytest.fixture(scope='module')
def models() -> tuple[VQGAN, ClipModel]:
    return VQGAN.random(VQGAN_CONFIGS['tiny'], 0), ClipModel.build_tiny(0)


def _source(side: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, 256, (side // 16, side // 16, 3)).astype(np.uint8)
    return Image.fromarray(coarse).resize((side, side), Image.Resampling.BILINEAR)


def test_defaults_are_the_originals() -> None:
    settings = ClassicSettings()
    assert (settings.steps, settings.cutn, settings.cut_pow, settings.lr) == (200, 64, 1.0, 0.1)
    assert (settings.text_weight, settings.image_weight, settings.display_every) == (1.0, 1.0, 20)


def test_soft_column_weights_16_9() -> None:
    weights = classic_keep_weights(compute_geometry('16:9'))
    assert weights.shape == (16, 28)
    expected = [0.0] * 6 + [1 / 3, 2 / 3] + [1.0] * 12 + [2 / 3, 1 / 3] + [0.0] * 6
    assert torch.allclose(weights[0], torch.tensor(expected))
    assert (weights == weights[0]).all()  # every row alike


def test_soft_row_weights_9_16_are_the_transpose() -> None:
    """The original's tall branch used the wide branch's variable (NameError or wrong rows)."""
    tall = classic_keep_weights(compute_geometry('9:16'))
    assert tall.shape == (28, 16)
    assert torch.equal(tall, classic_keep_weights(compute_geometry('16:9')).T)


def test_codebook_box() -> None:
    codebook = torch.tensor([[0.0, 5.0], [-1.0, 2.0], [3.0, -4.0]])
    low, high = codebook_box(codebook)
    assert low.flatten().tolist() == [-1.0, -4.0] and high.flatten().tolist() == [3.0, 5.0]
    assert low.shape == (1, 2, 1, 1)


@pytest.mark.parametrize('ratio', ['16:9', '9:16'])
def test_loop_restores_clamps_and_counts_steps(models: tuple[VQGAN, ClipModel], ratio: str) -> None:
    vqgan, clip = models
    geometry = compute_geometry(ratio, (4, 4))
    keep = classic_keep_weights(geometry)
    low, high = codebook_box(vqgan.codebook.detach())
    seen: list[torch.Tensor] = []
    previews: list[object] = []
    out = run_classic(
        vqgan,
        clip,
        _source(),
        'rolling farmland',
        geometry,
        seed=3,
        settings=ClassicSettings(steps=2, cutn=2, display_every=1),
        observer=lambda step, z: seen.append(z.clone()),
        progress=lambda stage, done, total, preview: previews.append((stage, done, total, preview)),
    )
    assert len(seen) == 2 and len(out.losses[0]) == 2
    assert out.images[0].size == geometry.size
    assert [p[:3] for p in previews] == [('expand', 1, 2), ('expand', 2, 2)]
    assert all(isinstance(p[3], Image.Image) for p in previews)  # the extra display decode
    hard = (keep == 1)[None, None].expand_as(seen[0])
    free = (keep == 0)[None, None].expand_as(seen[0])
    for z in seen:
        assert torch.equal(z[hard], seen[0][hard])  # hard-kept tokens are z0 after every step
        assert (z >= low - 1e-6).all() and (z <= high + 1e-6).all()
    assert not torch.equal(seen[1][free], seen[0][free]) or out.losses[0][0] == out.losses[0][1]


def test_classic_is_deterministic_and_cancellable(models: tuple[VQGAN, ClipModel]) -> None:
    vqgan, clip = models
    geometry = compute_geometry('2:1', (4, 4))
    settings = ClassicSettings(steps=1, cutn=2, faithful_io=False)
    first = run_classic(vqgan, clip, _source(), 'a lake', geometry, seed=9, settings=settings)
    second = run_classic(vqgan, clip, _source(), 'a lake', geometry, seed=9, settings=settings)
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(second.images[0]))
    assert first.losses == second.losses
    with pytest.raises(ExpandCancelled):
        run_classic(vqgan, clip, _source(), 'a lake', geometry, seed=9, settings=settings, should_cancel=lambda: True)
