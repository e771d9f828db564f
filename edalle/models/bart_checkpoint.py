"""Reading and writing DalleBart `flax_model.msgpack` files, scanned or not.

dalle-mini saved its published models with `use_scan=True`: every layer leaf under
`model/{encoder,decoder}/layers/FlaxBart{Encoder,Decoder}Layers` has a leading layer axis.
With `use_scan=False` the same leaves sit under one key per layer,
`layers/FlaxBart{Encoder,Decoder}Layer_{i}`; some conversions use bare `layers/{i}`. Both
load here into the scanned tree `edalle.models.bart` uses, checked leaf by leaf against
the config. The NormFormer LNs without a scale are stored without one, as ours are.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from edalle.config import BartConfig
from edalle.models.bart import init_params
from edalle.models.flax_msgpack import read_msgpack, write_msgpack

CODECS = {'encoder': 'Encoder', 'decoder': 'Decoder'}
UNSCANNED_KEY = re.compile(r'^(?:FlaxBart(?:Encoder|Decoder)Layer_)?(\d+)$')


class CheckpointMismatch(ValueError):
    """The checkpoint does not fit the config: a key is missing, unexpected or the wrong shape."""


def load_config(model_dir: str | Path) -> BartConfig:
    return BartConfig.from_json(Path(model_dir) / 'config.json')


def expected_shapes(config: BartConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Leaf path → shape of the scanned tree, found by tracing init without computing it."""
    abstract = jax.eval_shape(lambda: init_params(config, 0))
    return {path: leaf.shape for path, leaf in flatten_dict(abstract).items()}


def stack_layers(params: dict) -> dict:
    """Turn an unscanned tree (one key per layer) into the scanned one, in place of `layers`.

    One leaf name at a time: each stack is built and its per-layer leaves dropped before
    the next, so a large checkpoint is not held twice.
    """
    model = params.get('model', {})
    for codec, title in CODECS.items():
        layers = model.get(codec, {}).get('layers')
        if layers is None or f'FlaxBart{title}Layers' in layers:
            continue
        numbered = {int(m.group(1)): value for key, value in layers.items() if (m := UNSCANNED_KEY.match(str(key)))}
        if not numbered or sorted(numbered) != list(range(len(numbered))) or len(numbered) != len(layers):
            raise CheckpointMismatch(f'model/{codec}/layers: cannot read layer keys {sorted(layers)[:4]}…')
        per_layer = [flatten_dict(numbered[i]) for i in range(len(numbered))]
        numbered.clear()
        layers.clear()  # `per_layer` now holds the only references to the layer leaves
        stacked = {}
        for path in list(per_layer[0]):
            try:
                stacked[path] = np.stack([leaves.pop(path) for leaves in per_layer])
            except KeyError:
                raise CheckpointMismatch(f'model/{codec}/layers: {"/".join(path)} is missing from some layers') from None
        if any(per_layer):
            extra = next(path for leaves in per_layer for path in leaves)
            raise CheckpointMismatch(f'model/{codec}/layers: {"/".join(extra)} is missing from layer 0')
        model[codec]['layers'] = {f'FlaxBart{title}Layers': unflatten_dict(stacked)}
    return params


def unstack_layers(params: dict) -> dict:
    """The `use_scan=False` layout: `layers/FlaxBart{Codec}Layer_{i}`."""
    out = jax.tree.map(lambda x: x, params)  # a copy of the dict structure; leaves are shared
    for codec, title in CODECS.items():
        scanned = out['model'][codec]['layers'].pop(f'FlaxBart{title}Layers')
        layer_count = jax.tree.leaves(scanned)[0].shape[0]
        for i in range(layer_count):
            out['model'][codec]['layers'][f'FlaxBart{title}Layer_{i}'] = jax.tree.map(lambda x, i=i: x[i], scanned)
    return out


def check_params(params: dict, config: BartConfig) -> None:
    """Raise CheckpointMismatch naming the first key that is missing, unexpected or misshapen."""
    expected = expected_shapes(config)
    found = {path: np.shape(leaf) for path, leaf in flatten_dict(params).items()}
    for path, shape in expected.items():
        name = '/'.join(path)
        if path not in found:
            raise CheckpointMismatch(f'{name}: missing from the checkpoint (expected shape {shape})')
        if found[path] != shape:
            raise CheckpointMismatch(f'{name}: shape {found[path]} in the checkpoint, config needs {shape}')
    unexpected = sorted(found.keys() - expected.keys())
    if unexpected:
        raise CheckpointMismatch(f'{"/".join(unexpected[0])}: not part of a DalleBart with this config')


def read_params(path: str | Path, config: BartConfig) -> dict:
    """Params from a `flax_model.msgpack` (scanned or unscanned) as numpy arrays, checked against `config`.

    The file is streamed (`flax_msgpack.read_msgpack`), so host memory peaks near one copy
    of the weights; `sampling.prepare_sampler(..., release=True)` keeps it there.
    """
    params = stack_layers(read_msgpack(path))
    check_params(params, config)
    return params


def load_params(path: str | Path, config: BartConfig, dtype: Any = None) -> dict:
    """`read_params` as jax arrays on the default device.

    Leaves keep their stored dtype (mega-1-fp16 stores float16) unless `dtype` is given,
    in which case floating leaves are cast to it.
    """

    def to_device(leaf: np.ndarray) -> jax.Array:
        is_float = np.issubdtype(leaf.dtype, np.floating) or leaf.dtype == jnp.bfloat16
        return jnp.asarray(leaf, dtype if dtype is not None and is_float else None)

    return jax.tree.map(to_device, read_params(path, config))


def save_params(params: dict, path: str | Path, *, scanned: bool = True) -> None:
    """Write params as a published-style `flax_model.msgpack`, atomically (temp file + rename), one leaf at a time."""
    tree = params if scanned else unstack_layers(jax.tree.map(np.asarray, params))
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    write_msgpack(tree, tmp)
    os.replace(tmp, path)
