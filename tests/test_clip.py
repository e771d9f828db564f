"""CLIP ranking: the score is 100 × cosine, computed on CLIP's own preprocessing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edalle.config import ClipConfig
from edalle.models.clip import ClipModel, fit_square, load_state_dict, save_state_dict


@pytest.fixture(scope='module')
def clip() -> ClipModel:
    return ClipModel.build_tiny(seed=3)


def test_score_is_100_times_cosine_with_clip_preprocessing(clip: ClipModel) -> None:
    pixels = torch.rand(4, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    scores = clip.score(pixels, 'a red barn')
    # independent path: open_clip's model on bicubic-resized, mean/std-normalised input
    x = F.interpolate(pixels, size=(224, 224), mode='bicubic', antialias=True, align_corners=False)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        image = clip.model.encode_image((x - mean) / std)
        text = clip.model.encode_text(clip.tokenizer(['a red barn']))
    expected = 100 * F.cosine_similarity(image, text)
    assert torch.allclose(scores, expected, atol=1e-4)
    assert not torch.allclose(scores, clip.score(pixels, 'a blue sea'))  # the prompt matters


def test_tiny_clip_is_seeded_and_round_trips(tmp_path, clip: ClipModel) -> None:
    again = ClipModel.build_tiny(seed=3)
    other = ClipModel.build_tiny(seed=4)
    first = next(iter(clip.model.state_dict().values()))
    assert torch.equal(first, next(iter(again.model.state_dict().values())))
    assert not torch.equal(first, next(iter(other.model.state_dict().values())))
    save_state_dict(clip.model, tmp_path / 'clip.safetensors')
    loaded = ClipModel.load_tiny(tmp_path / 'clip.safetensors')
    pixels = torch.rand(2, 3, 224, 224)
    assert torch.allclose(loaded.score(pixels, 'x'), clip.score(pixels, 'x'))
    assert set(load_state_dict(tmp_path / 'clip.safetensors')) == set(clip.model.state_dict())


def test_image_embeddings_are_differentiable(clip: ClipModel) -> None:
    pixels = torch.rand(2, 3, 256, 448, requires_grad=True)
    clip.encode_images(pixels).sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


def test_fit_square_crops_the_centre() -> None:
    wide = torch.zeros(1, 1, 20, 40)
    wide[..., 10:30] = 1.0  # the centre 20 columns
    out = fit_square(wide, 20)
    assert out.shape == (1, 1, 20, 20) and torch.allclose(out, torch.ones_like(out), atol=1e-5)


def test_missing_local_weights_are_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match='CLIP weights not found'):
        ClipModel.load(ClipConfig('ViT-B-32', str(tmp_path / 'absent.safetensors')))


@pytest.mark.slow
def test_build_random_is_seeded_and_real_sized() -> None:
    a, b = ClipModel.build_random('ViT-B-32', 0), ClipModel.build_random('ViT-B-32', 0)
    assert a.image_size == 224 and a.name == 'ViT-B-32'
    assert sum(p.numel() for p in a.model.parameters()) > 100_000_000  # the published size, ~151M
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True))
    assert not any(p.requires_grad for p in a.model.parameters())


def test_sequence_first_layout_is_the_same_model() -> None:
    """`_wrap` runs the image tower sequence-first; embeddings and input gradients are open_clip's own."""
    import open_clip

    from edalle.models.clip import TINY_CLIP_CFG

    wrapped = ClipModel.build_tiny(seed=5)
    assert wrapped.model.visual.transformer.batch_first is False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        plain = open_clip.CLIP(**TINY_CLIP_CFG).eval()
    assert plain.visual.transformer.batch_first is True
    x = torch.rand(3, 3, 224, 224, requires_grad=True)
    a = wrapped.model.encode_image(x)
    (ga,) = torch.autograd.grad(a.sum(), x)
    b = plain.encode_image(x)
    (gb,) = torch.autograd.grad(b.sum(), x)
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(ga, gb, atol=1e-6)
