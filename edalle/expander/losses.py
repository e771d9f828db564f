"""The CLIP objective: squared spherical distance between embeddings, and a clamp that lets gradients back in.

Both are what Katherine Crowson's VQGAN+CLIP (and so E-DALL-E) uses; the default method
reuses them, so the two methods differ in what they look at, not in what they measure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def spherical_distance_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D), (P, D) → (N, P): θ²/2 where θ is the angle between the embeddings.

    Computed as 2·arcsin(‖â − b̂‖/2)², the original's form: the chord d = 2 sin(θ/2).
    """
    a = F.normalize(a.float(), dim=-1).unsqueeze(1)  # (N, 1, D)
    b = F.normalize(b.float(), dim=-1).unsqueeze(0)  # (1, P, D)
    chord = (a - b).norm(dim=-1)  # (N, P)
    return chord.div(2).clamp(max=1).arcsin().pow(2).mul(2)


def prompt_loss(embeddings: torch.Tensor, targets: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Mean over all (embedding, target) pairs of the squared spherical distance, times `weight` (sign included)."""
    return spherical_distance_sq(embeddings, targets).mean() * weight


class _ClampWithGrad(torch.autograd.Function):
    """Clamp in the forward pass; in the backward pass, zero the gradient only where it would push further out."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        ctx.low, ctx.high = low, high  # type: ignore[attr-defined]
        ctx.save_for_backward(x)
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        outside = x - x.clamp(ctx.low, ctx.high)  # type: ignore[attr-defined]
        # a descent step moves x by -grad: let it through when that heads back into the range
        return grad * (grad * outside >= 0), None, None


def clamp_with_grad(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return _ClampWithGrad.apply(x, low, high)


def negative_hinge(embeddings: torch.Tensor, prompt: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    """(N, D) views, (D,) prompt and negative embeddings → scalar: mean over views of max(0, d_prompt − d_negative + margin).

    d is θ²/2 (`spherical_distance_sq`). A view must be at least `margin` nearer the prompt than
    the negative; views that already are feel no push, so the term cannot run away from the
    prompt the way an unbounded "maximise the distance to the negative" would. Per view it is at
    most d_prompt + margin, and its gradient is the prompt term's plus one away from the negative.
    A negative equal to the prompt gives a constant `margin` and no gradient at all.
    """
    distances = spherical_distance_sq(embeddings, torch.stack([prompt, negative]))  # (N, 2), one graph for both
    return torch.relu(distances[:, 0] - distances[:, 1] + margin).mean()
