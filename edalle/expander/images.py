"""PIL ↔ tensor conversions for the expander, with the rounding each method needs."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_pixels(image: Image.Image, device: str | torch.device = 'cpu') -> torch.Tensor:
    """PIL image → (1, 3, H, W) float32 in [0, 1]."""
    array = np.asarray(image.convert('RGB'), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(device)


def to_images(pixels: torch.Tensor, *, truncate: bool = False) -> list[Image.Image]:
    """(B, 3, H, W) in [0, 1] → PIL RGB images. `truncate` reproduces the original's uint8 cast."""
    scaled = pixels.detach().float().mul(255).clamp(0, 255)
    array = (scaled if truncate else scaled.round()).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, 'RGB') for a in array]
