"""Time-lapse frames of an optimisation: a small picture every k steps, and the final picture last.

Kept off the hot path: a frame reuses the image the step already decoded and composited for
CLIP, is shrunk on the device (area average) and converted to uint8 there, and only then
copied to the host (asynchronously from a GPU: the copy overlaps the next step and is waited
for once, at the end). Frames at steps 0, k, 2k, … (step = updates done, so frame 0 is the
start) and the final picture: ⌈steps / k⌉ + 1 frames. Encoding them (GIF, WebP) is not done here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FRAME_PX = 512  # frames' longest side at most this (a 448×256 canvas keeps its size)


@dataclass(frozen=True)
class Frame:
    step: int  # updates made before it: 0 is the start, the run's step count the final picture
    image: np.ndarray  # (h, w, 3) uint8 RGB


def frame_size(height: int, width: int, max_px: int = FRAME_PX) -> tuple[int, int]:
    """(h, w) of the frames of a height × width canvas: shrunk by the smallest whole factor that fits `max_px`."""
    factor = max(1, math.ceil(max(height, width) / max_px))
    return (max(1, height // factor), max(1, width // factor))


def to_frame_pixels(image: torch.Tensor, max_px: int = FRAME_PX) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] → (B, h, w, 3) uint8 on the same device, rounded as `images.to_images` rounds."""
    size = frame_size(image.shape[-2], image.shape[-1], max_px)
    small = image.detach().float()
    if tuple(small.shape[-2:]) != size:
        small = F.interpolate(small, size=size, mode='area')
    return small.mul(255).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)


class FrameRecorder:
    """Collects frames for a batch; `every` 0 records nothing."""

    def __init__(self, batch: int, every: int, max_px: int = FRAME_PX) -> None:
        if every < 0:
            raise ValueError(f'record_every must be 0 (off) or more (got {every})')
        self.every = every
        self.max_px = max_px
        self._pending: list[tuple[int, torch.Tensor]] = []
        self.batch = batch

    def wants(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def record(self, step: int, image: torch.Tensor) -> None:
        """Keep a frame of `image` (B, 3, H, W), the picture after `step` updates."""
        pixels = to_frame_pixels(image, self.max_px)
        if pixels.device.type == 'cuda':
            host = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(pixels, non_blocking=True)
            pixels = host
        self._pending.append((step, pixels))

    def finish(self, final: torch.Tensor, steps: int) -> list[list[Frame]]:
        """The frames per image, the final picture last; [] per image when off.

        `final` (B, 3, H, W) is the delivered picture as it was rounded to 8 bits (`images.to_pixels`
        of it), so the last frame is that picture exactly, shrunk like the others if they are.
        """
        if self.every <= 0:
            return [[] for _ in range(self.batch)]
        self.record(steps, final)
        if torch.cuda.is_available() and any(p.is_pinned() for _, p in self._pending):
            torch.cuda.synchronize()
        return [[Frame(step, pixels[i].cpu().numpy()) for step, pixels in self._pending] for i in range(self.batch)]
