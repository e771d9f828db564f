"""Each VQGAN code's mean colour: previews of a grid being sampled that cost nothing on a CPU.

A VQGAN decode of one 256 × 256 grid costs about as much as a hundred sampling steps of
mini on a 2-core CPU, so a grid being sampled is previewed by painting every token in its
code's mean colour instead: a 16 × 16 picture, upscaled nearest. The table is fitted once
per VQGAN (the engine keeps it with the weights) and painting is one numpy lookup.

How the table is fitted: grids of random codes are decoded, and each 16 × 16-pixel patch's
mean colour is attributed to the code at its cell. With one colour per code as the model,
least squares has a diagonal normal matrix, so its solution is exactly each code's average
patch colour over the cells it filled: no solver, and nothing a few decodes could not
determine. The grids are shuffles of the whole codebook, so every code is seen `rounds`
times in random company, for N/256 decodes a round (64 for the 16,384-code VQGAN: about
90 s on a 2-core CPU, a second on a GPU). A code's patch also takes colour from its
neighbours (the decoder sees far beyond one cell); averaged over random company that is a
pull toward the mean colour, which a preview can live with. The alternative, decoding each
code alone in a uniform grid, costs N decodes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edalle.models.vqgan import VQGAN

GRID_SIDE = 16  # DALL·E mini's 16 × 16 token grid


def fit_code_colours(vqgan: VQGAN, *, rounds: int = 1, seed: int = 0, batch_size: int = 4) -> np.ndarray:
    """The mean colour of every code (N, 3) float32 in [0, 1], from `rounds` shuffles of the codebook decoded as grids.

    Deterministic for a seed (the shuffles come from it; the decode is a fixed computation).
    `batch_size` grids are decoded at once, on the VQGAN's device.
    """
    count = vqgan.config.n_embed
    cells = GRID_SIDE * GRID_SIDE
    grid_count = -(-count // cells)
    rng = np.random.default_rng(seed)
    sums = np.zeros((count, 3), np.float64)
    seen = np.zeros(count, np.int64)
    device = vqgan.codebook.device
    for _ in range(rounds):
        shuffled = rng.permutation(count)
        filler = rng.integers(0, count, grid_count * cells - count)  # the last grid's spare cells, if any
        grids = np.concatenate([shuffled, filler]).reshape(grid_count, GRID_SIDE, GRID_SIDE)
        for start in range(0, grid_count, batch_size):
            codes = grids[start : start + batch_size]
            with torch.inference_mode():
                pixels = vqgan.decode_tokens(torch.from_numpy(codes).to(device))  # (B, 3, 256, 256) in [0, 1]
                patches = F.avg_pool2d(pixels.float(), vqgan.downsample_factor)  # (B, 3, 16, 16): one per cell
            np.add.at(sums, codes.ravel(), patches.permute(0, 2, 3, 1).reshape(-1, 3).cpu().numpy())
            np.add.at(seen, codes.ravel(), 1)
    return (sums / seen[:, None]).astype(np.float32)


def paint_tokens(tokens: np.ndarray, colours: np.ndarray, *, scale: int = 1, unsampled: float = 0.5) -> np.ndarray:
    """Tokens (..., T) in raster order → RGB pictures (..., 16·scale, 16·scale, 3) uint8, each cell its code's colour.

    T may be below 256 (a grid being sampled: the first T cells); the cells not sampled yet are
    grey (`unsampled`, in [0, 1]). `colours` is `fit_code_colours`'s table.
    """
    tokens = np.asarray(tokens)
    cells = GRID_SIDE * GRID_SIDE
    if tokens.shape[-1] > cells:
        raise ValueError(f'a grid holds {cells} tokens, got {tokens.shape[-1]}')
    rgb = np.full(tokens.shape[:-1] + (cells, 3), unsampled, np.float32)
    rgb[..., : tokens.shape[-1], :] = colours[tokens]
    picture = np.rint(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
    picture = picture.reshape(tokens.shape[:-1] + (GRID_SIDE, GRID_SIDE, 3))
    return picture.repeat(scale, axis=-3).repeat(scale, axis=-2)
