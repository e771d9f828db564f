"""CLIP through open_clip: ranks candidates against their prompt and guides the expander.

The score is DALL·E mini's reranking score, `100 × cosine(image, prompt)` (what
`logits_per_image` holds before the softmax). Images enter as float tensors in [0, 1] so the
expander can backpropagate through `encode_images`; resizing and normalisation happen here
and nowhere else.

Two ways in:
- `ClipModel.load(config)`: an open_clip model by name, with `pretrained='openai'` (open_clip
  fetches it; needs the hub) or a local checkpoint file (`edalle models download` puts one in
  the data directory).
- `ClipModel.load_tiny(path)`: the `tiny` preset's small CLIP of the same architecture with
  seeded random weights, for tests and trying the plumbing without downloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from PIL import Image
from torch import nn

from edalle.config import ClipConfig

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# The tiny preset's CLIP: ViT-B-32's shape (patch 32, 224 px, the 49408-token BPE vocabulary
# that open_clip's bundled tokenizer produces), two layers of width 64 in each tower.
TINY_CLIP_CFG: dict[str, Any] = {
    'embed_dim': 64,
    'vision_cfg': {'image_size': 224, 'layers': 2, 'width': 64, 'patch_size': 32, 'head_width': 32},
    'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 64, 'heads': 2, 'layers': 2},
    'quick_gelu': True,
}


@dataclass
class ClipModel:
    """An open_clip model with its tokenizer and input geometry, in eval mode, frozen."""

    model: torch.nn.Module
    tokenizer: Any
    image_size: int
    mean: torch.Tensor  # (1, 3, 1, 1)
    std: torch.Tensor  # (1, 3, 1, 1)
    name: str
    pooled_tower: bool = False  # whether `pooled_image_embedding` can run this image tower (`supports_pooled`)

    @classmethod
    def load(cls, config: ClipConfig, *, device: str | torch.device = 'cpu') -> ClipModel:
        """Build `config.model_name` with its pretrained weights (a tag or a local file)."""
        pretrained = config.pretrained
        is_file = Path(pretrained).suffix in {'.pt', '.bin', '.safetensors', '.pth'}
        if is_file and not Path(pretrained).is_file():
            raise FileNotFoundError(f'CLIP weights not found: {pretrained}')
        # OpenAI's weights were trained with QuickGELU; open_clip's plain ViT-B-32 uses GELU.
        quick_gelu = pretrained == 'openai' or 'openai' in Path(pretrained).name
        model = open_clip.create_model(
            config.model_name, pretrained=pretrained, device=device, force_quick_gelu=quick_gelu, require_pretrained=True
        )
        return cls._wrap(model, open_clip.get_tokenizer(config.model_name), config.model_name, device)

    @classmethod
    def build_tiny(cls, seed: int, *, device: str | torch.device = 'cpu') -> ClipModel:
        """The tiny architecture with seeded random weights (made locally, no download)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.CLIP(**TINY_CLIP_CFG)
        return cls._wrap(model.to(device), open_clip.get_tokenizer('ViT-B-32'), 'tiny', device)

    @classmethod
    def build_random(cls, model_name: str, seed: int, *, device: str | torch.device = 'cpu') -> ClipModel:
        """A published architecture (e.g. 'ViT-B-32') with seeded random weights, no download.

        For benchmarks: the compute of a forward or backward pass does not depend on the weight
        values, so real sizes can be timed without fetching a checkpoint.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.create_model(model_name, pretrained=None, device=device)
        return cls._wrap(model, open_clip.get_tokenizer(model_name), model_name, device)

    @classmethod
    def load_tiny(cls, path: str | Path, *, device: str | torch.device = 'cpu') -> ClipModel:
        model = open_clip.CLIP(**TINY_CLIP_CFG)
        model.load_state_dict(load_state_dict(path))
        return cls._wrap(model.to(device), open_clip.get_tokenizer('ViT-B-32'), 'tiny', device)

    @classmethod
    def _wrap(cls, model: torch.nn.Module, tokenizer: Any, name: str, device: str | torch.device) -> ClipModel:
        model.eval().requires_grad_(False)
        _sequence_first(model)
        size = model.visual.image_size
        image_size = size[0] if isinstance(size, tuple | list) else int(size)
        mean = torch.tensor(OPENAI_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_STD, device=device).view(1, 3, 1, 1)
        return cls(model, tokenizer, image_size, mean, std, name, supports_pooled(model.visual, image_size))

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings, (P, D). CLIP truncates at 77 tokens."""
        tokens = self.tokenizer(prompts).to(self.device)
        with torch.no_grad():
            return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def normalize_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] → CLIP's input statistics. Size must already be `image_size`."""
        return (pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings, (B, D), differentiable w.r.t. `pixels` (B, 3, H, W) in [0, 1].

        Non-square inputs are resized on their short side and centre-cropped, as open_clip's
        own preprocessing does; candidates are square, so they are only resized.
        """
        x = self.normalize_pixels(fit_square(pixels, self.image_size))
        embedding = pooled_image_embedding(self.model.visual, x) if self.pooled_tower else self.model.encode_image(x)
        return F.normalize(embedding.float(), dim=-1)

    def score(self, pixels: torch.Tensor, prompt: str) -> torch.Tensor:
        """100 × cosine between each image and the prompt: (B,) float32."""
        text = self.encode_text([prompt])  # (1, D)
        with torch.no_grad():
            images = self.encode_images(pixels.to(self.device))  # (B, D)
        return 100.0 * (images @ text.T).squeeze(1)


def _sequence_first(model: torch.nn.Module) -> None:
    """Run the image tower's attention blocks on (L, N, D) activations instead of (N, L, D).

    Same weights, same maths (open_clip supports both layouts). With batch-first input,
    `nn.MultiheadAttention` transposes to (L, N, D) itself, and with gradients on (its fused
    fast path is inference-only) every projection then runs on non-contiguous activations:
    under bf16 autocast each becomes a copy plus a batched matmul, which measured 12 s against
    9 s for CLIP ViT-B-32 forward + backward on 64 views (one CPU thread); fp32 is unchanged.
    The text tower runs once per prompt and is left alone.
    """
    transformer = getattr(getattr(model, 'visual', None), 'transformer', None)
    blocks = list(getattr(transformer, 'resblocks', []))
    if not hasattr(transformer, 'batch_first') or not all(
        isinstance(getattr(block, 'attn', None), nn.MultiheadAttention) for block in blocks
    ):
        return  # another architecture: leave it as built
    transformer.batch_first = False  # type: ignore[union-attr]
    for block in blocks:
        block.attn.batch_first = False


def supports_pooled(visual: nn.Module, image_size: int) -> bool:
    """Whether `pooled_image_embedding` computes exactly what `visual(x)` does for this tower.

    It does for the plain ViTs CLIP ranks and guides with (OpenAI's ViT-B/32 and its
    open_clip relatives): class-token pooling, no attentional pooler, no token output, a
    bias-free patch convolution with stride equal to its kernel, standard residual blocks run
    sequence-first (`_sequence_first`). Anything else goes through open_clip's own forward.
    """
    conv = getattr(visual, 'conv1', None)
    transformer = getattr(visual, 'transformer', None)
    blocks = list(getattr(transformer, 'resblocks', []))
    return (
        isinstance(visual, VisionTransformer)
        and getattr(visual, 'attn_pool', None) is None
        and getattr(visual, 'pool_type', 'tok') == 'tok'
        and not getattr(visual, 'output_tokens', False)
        and isinstance(getattr(visual, 'patch_dropout', nn.Identity()), nn.Identity)
        and isinstance(conv, nn.Conv2d)
        and conv.bias is None
        and conv.kernel_size == conv.stride
        and conv.kernel_size[0] == conv.kernel_size[1]
        and conv.padding == (0, 0)
        and image_size % conv.kernel_size[0] == 0
        and getattr(transformer, 'batch_first', True) is False
        and bool(blocks)
        and all(type(block) is ResidualAttentionBlock and not hasattr(block, 'ln_1_kv') for block in blocks)
    )


def pooled_image_embedding(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`visual(x)` for towers that pass `supports_pooled`, with two costs of open_clip's forward removed.

    - The patch embedding is a reshape and a matmul rather than a convolution whose stride
      equals its kernel: the same products, but oneDNN's backward of that convolution took
      1.7 s of a 15 s forward + backward of 64 views (ViT-B/32, fp32, one CPU thread).
    - The last block computes its attention output and MLP for the class token only: the
      pooled embedding reads nothing else, and the other 49 tokens' query, projection and MLP
      are about a tenth of the tower.

    Measured together on that machine: 64 views forward + backward 14.98 → 12.26 s in fp32,
    8.92 → 6.89 s under bf16 autocast; the embedding agrees with open_clip's to float rounding.
    """
    n = x.shape[0]
    weight = visual.conv1.weight  # (D, 3, p, p)
    p = weight.shape[-1]
    rows, columns = x.shape[-2] // p, x.shape[-1] // p
    patches = x.reshape(n, 3, rows, p, columns, p).permute(0, 2, 4, 1, 3, 5).reshape(n, rows * columns, 3 * p * p)
    tokens = F.linear(patches, weight.reshape(weight.shape[0], -1))  # (N, rows · columns, D)
    cls = visual.class_embedding.to(tokens.dtype).expand(n, 1, -1)
    h = visual.ln_pre(torch.cat([cls, tokens], dim=1) + visual.positional_embedding.to(tokens.dtype))
    h = h.transpose(0, 1)  # (L, N, D): the blocks run sequence-first
    *blocks, last = visual.transformer.resblocks
    for block in blocks:
        h = block(h)
    normed = last.ln_1(h)
    cls = h[:1] + last.ls_1(last.attn(normed[:1], normed, normed, need_weights=False)[0])
    cls = cls + last.ls_2(last.mlp(last.ln_2(cls)))
    pooled = visual.ln_post(cls[0])
    return pooled @ visual.proj if visual.proj is not None else pooled


def fit_square(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side to `size` (bicubic, antialiased) and centre-crop to size × size."""
    h, w = pixels.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        new_hw = (max(size, round(h * scale)), max(size, round(w * scale)))
        pixels = F.interpolate(pixels, size=new_hw, mode='bicubic', align_corners=False, antialias=True)
        top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
        pixels = pixels[..., top : top + size, left : left + size]
    return pixels


def pixels_from_images(images: list[Image.Image]) -> torch.Tensor:
    """PIL RGB images of one size → (B, 3, H, W) float32 in [0, 1]."""
    import numpy as np

    arrays = np.stack([np.asarray(image.convert('RGB'), dtype=np.float32) for image in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).div_(255.0)


def save_state_dict(model: torch.nn.Module, path: str | Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))
