"""Random DalleBart weights for tests that must notice a mis-mapped parameter."""

from __future__ import annotations

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from edalle.config import BartConfig
from edalle.models.bart import init_params


def perturbed_params(config: BartConfig, seed: int) -> dict:
    """Seeded random weights with every LN scale and bias moved off 1 and 0, so a swapped or dropped norm shows."""
    flat = flatten_dict(init_params(config, seed=seed))
    rng = np.random.default_rng(seed)
    for path, leaf in flat.items():
        noise = rng.normal(size=leaf.shape).astype(np.float32)
        flat[path] = {'scale': 1 + 0.2 * noise, 'bias': 0.2 * noise}.get(path[-1], 0.1 * noise)
    return unflatten_dict(flat)
