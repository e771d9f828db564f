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


def _towers(clip: ClipModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ours, open_clip's) embeddings and their gradients with respect to the input."""
    from edalle.models.clip import pooled_image_embedding

    x = x.clone().requires_grad_(True)
    ours = pooled_image_embedding(clip.model.visual, x)
    (ours_grad,) = torch.autograd.grad((ours * torch.linspace(-1, 1, ours.shape[1])).sum(), x)
    theirs = clip.model.visual(x)
    (theirs_grad,) = torch.autograd.grad((theirs * torch.linspace(-1, 1, theirs.shape[1])).sum(), x)
    return ours, theirs, ours_grad, theirs_grad


def test_pooled_tower_is_open_clip_s_embedding_and_gradient(clip: ClipModel) -> None:
    assert clip.pooled_tower  # the tiny tower is a plain ViT: the fast path runs in every other test too
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    ours, theirs, ours_grad, theirs_grad = _towers(clip, x)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)
    assert torch.allclose(ours_grad, theirs_grad, atol=1e-7, rtol=1e-4)
    # each view's embedding is its own: changing one view moves only its row
    x[1, :, :32, :32] += 1
    moved = _towers(clip, x)[0]
    assert torch.equal(moved[0], ours[0]) and not torch.allclose(moved[1], ours[1])


@pytest.mark.slow
def test_pooled_tower_matches_open_clip_at_vit_b_32_size() -> None:
    clip = ClipModel.build_random('ViT-B-32', 0)
    assert clip.pooled_tower
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    ours, theirs, ours_grad, theirs_grad = _towers(clip, x)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4)
    assert torch.allclose(ours_grad, theirs_grad, atol=1e-6, rtol=1e-3)


def test_towers_the_pooled_path_cannot_run_use_open_clip_s_forward() -> None:
    from edalle.models.clip import supports_pooled

    clip = ClipModel.build_tiny(seed=3)
    visual = clip.model.visual
    assert supports_pooled(visual, 224)
    assert not supports_pooled(visual, 230)  # not a whole number of patches
    visual.output_tokens = True  # someone wants the tokens, which the fast path does not compute
    assert not supports_pooled(visual, 224)
    visual.output_tokens = False
    visual.transformer.batch_first = True  # the blocks would be fed the wrong layout
    assert not supports_pooled(visual, 224)
