"""Read and write VQGAN weights: taming `last.ckpt`, vqgan-jax `flax_model.msgpack`, our safetensors.

This is the only module that knows upstream names and file layouts; `vqgan.py` only knows
taming's state-dict names, which are also ours.

Formats, detected by `load_vqgan` from the file name (or, for a directory, from which of
these it holds, in this order):

- `model.safetensors`: ours. The config and the pixel range are JSON strings in the
  safetensors metadata (a sidecar `config.json` is accepted when the metadata has no config).
- `flax_model.msgpack` + `config.json`: the transformers/vqgan-jax layout of
  `dalle-mini/vqgan_imagenet_f16_16384`. NHWC conv kernels (kh, kw, in, out), GroupNorm
  `scale`/`bias`, the codebook at `quantize/embedding/embedding`, and lists named
  `down_0/block_1/attn_2` (but `mid/block_1`, `mid/attn_1` are plain attribute names).
- `last.ckpt` (+ optional `model.yaml`): taming's PyTorch-Lightning checkpoint. It is read
  without Lightning by an unpickler that rebuilds tensors and standard containers and turns
  every other class it names into an inert stand-in (safer than `weights_only=False`,
  which would import and run whatever the pickle names). `loss.*` (LPIPS, discriminator)
  is dropped.

Pixel range: which range do the weights expect and produce?
- taming-transformers trains on [-1, 1]: `taming/data/base.py` maps uint8 images with
  `image / 127.5 - 1.0`, and `scripts/make_samples.py` saves decodes as `(x + 1) * 127.5`.
  So a taming `last.ckpt` is `'minus_one_one'`.
- dalle-mini uses its VQGAN in [0, 1] at both ends, and DalleBart's image tokens were made
  that way:
  - `tools/dataset/encode_dataset.ipynb` (borisdayma/dalle-mini) decodes the webdataset
    images as `"rgb"` (float32 HWC in [0, 1]) and passes them to `vqgan.encode` unchanged;
  - the older `dev/encoding/vqgan-jax-encoding*.ipynb` notebooks feed `T.ToTensor()` output ([0, 1]);
  - `tools/inference/inference_pipeline.ipynb` runs `vqgan.decode_code(...)`, then
    `.clip(0.0, 1.0)` and `* 255`;
  - kuprel/min-dalle's `VQGanDetokenizer` ends in `z.clip(0.0, 1.0) * 255`;
  - `examples/JAX_VQGAN_f16_16384_Reconstruction.ipynb` (dalle-mini @cb008a4) encodes
    `ToTensor()` images and treats the reconstruction as [0, 1] too.
  The hub card of `dalle-mini/vqgan_imagenet_f16_16384` says it was ported from the
  ImageNet taming checkpoint, whose training range was [-1, 1]. An autoencoder is close to
  the identity on its training range, and [0, 1] is part of [-1, 1], so [0, 1] images go
  in and come back out as [0, 1]. Every token DalleBart produces was learnt from such
  encodings, so they decode to [0, 1]. Mapping them with (x + 1) / 2 would give washed-out
  grey pictures. So the Flax weights are `'zero_one'`. This is read from code, not yet
  checked with the real weights (no hub access here). `load_vqgan(..., pixel_range=...)`
  overrides it.
"""

from __future__ import annotations

import json
import pickle
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edalle.config import VQGANConfig
from edalle.models.flax_msgpack import read_msgpack
from edalle.models.vqgan import PIXEL_RANGES, VQGAN, PixelRange

SAFETENSORS_NAME = 'model.safetensors'
FLAX_NAME = 'flax_model.msgpack'
CKPT_NAME = 'last.ckpt'
SEARCH_ORDER = (SAFETENSORS_NAME, FLAX_NAME, CKPT_NAME)
SAFETENSORS_FORMAT = 'edalle-vqgan'

# Native pixel range of each source, when the file does not say (see the module docstring).
FLAX_PIXEL_RANGE: PixelRange = 'zero_one'
TAMING_PIXEL_RANGE: PixelRange = 'minus_one_one'

StateDict = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- entry point


def load_vqgan(
    path: str | Path,
    *,
    device: str | torch.device = 'cpu',
    pixel_range: PixelRange | None = None,
    dtype: torch.dtype = torch.float32,
) -> VQGAN:
    """Load a VQGAN from a directory or a weights file in any supported format (eval mode, frozen).

    `pixel_range` overrides what the source implies (taming → [-1, 1], dalle-mini Flax →
    [0, 1], our safetensors → what its metadata says).
    """
    file = find_weights(Path(path))
    if file.suffix == '.safetensors':
        config, state, native_range = read_safetensors(file)
    elif file.suffix == '.msgpack':
        config, state = read_flax(file)
        native_range = FLAX_PIXEL_RANGE
    elif file.suffix in ('.ckpt', '.pt', '.pth'):
        config, state = read_taming(file)
        native_range = TAMING_PIXEL_RANGE
    else:
        raise ValueError(f'{file}: unknown VQGAN weights format (expected .safetensors, .msgpack or .ckpt)')
    chosen = pixel_range or native_range
    if chosen not in PIXEL_RANGES:
        raise ValueError(f'pixel_range must be one of {PIXEL_RANGES}, got {chosen!r}')
    return build_model(config, state, pixel_range=chosen, device=device, dtype=dtype, source=file)


def find_weights(path: Path) -> Path:
    """The weights file `path` names, or the preferred one inside the directory `path`."""
    if path.is_dir():
        for name in SEARCH_ORDER:
            if (path / name).is_file():
                return path / name
        ckpts = sorted(path.glob('*.ckpt'))
        if ckpts:
            return ckpts[0]
        raise FileNotFoundError(f'No VQGAN weights in {path}: expected one of {", ".join(SEARCH_ORDER)}.')
    if not path.is_file():
        raise FileNotFoundError(f'VQGAN weights file not found: {path}')
    return path


def build_model(
    config: VQGANConfig,
    state: Mapping[str, torch.Tensor],
    *,
    pixel_range: PixelRange,
    device: str | torch.device = 'cpu',
    dtype: torch.dtype = torch.float32,
    source: Path | str = '<state dict>',
) -> VQGAN:
    """A VQGAN holding exactly `state` (every key, no extra), without a throw-away random init.

    The model is built on the meta device and the tensors are assigned, so the 76M
    parameters are never randomly initialised only to be overwritten.
    """
    with torch.device('meta'):
        model = VQGAN(config, pixel_range=pixel_range)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        details = [
            f'{label} ({len(keys)}): {", ".join(keys[:5])}{", ..." if len(keys) > 5 else ""}'
            for label, keys in (('missing', missing), ('unexpected', unexpected), ('wrong shape', wrong))
            if keys
        ]
        raise ValueError(f'{source}: weights do not match VQGAN config {config}; ' + '; '.join(details))
    tensors = {k: v.detach().to(device=device, dtype=dtype).contiguous() for k, v in state.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    # Inference only: frozen parameters keep backward passes (the expander's gradients with
    # respect to latents) from computing and storing 76M unused weight gradients.
    return model.eval().requires_grad_(False)


def infer_config(state: Mapping[str, torch.Tensor], resolution: int = 256) -> VQGANConfig:
    """Read the architecture off taming-named weights (used when no config file comes along).

    Attention levels are found from which `encoder.down.i.attn` exist and expressed as the
    nominal resolutions `resolution / 2**i`, the way taming's configs name them.
    """
    n_embed, embed_dim = state['quantize.embedding.weight'].shape
    ch, in_channels = state['encoder.conv_in.weight'].shape[:2]
    levels = sorted({int(k.split('.')[2]) for k in state if k.startswith('encoder.down.')})
    ch_mult = tuple(int(state[f'encoder.down.{i}.block.0.conv1.weight'].shape[0]) // ch for i in levels)
    num_res_blocks = len({k.split('.')[4] for k in state if k.startswith('encoder.down.0.block.')})
    attn_levels = [i for i in levels if f'encoder.down.{i}.attn.0.q.weight' in state]
    return VQGANConfig(
        embed_dim=int(embed_dim),
        n_embed=int(n_embed),
        ch=int(ch),
        ch_mult=ch_mult,
        num_res_blocks=num_res_blocks,
        attn_resolutions=tuple(resolution // 2**i for i in attn_levels),
        z_channels=int(state['decoder.conv_in.weight'].shape[1]),
        resolution=resolution,
        in_channels=int(in_channels),
        out_ch=int(state['decoder.conv_out.weight'].shape[0]),
    )


# --------------------------------------------------------------------------- our safetensors


METADATA_KEY = 'edalle_vqgan'


def save_safetensors(model: VQGAN, path: str | Path) -> Path:
    """Write `model` as one safetensors file (a directory gets `model.safetensors`).

    The config and pixel range travel inside the file's metadata, so the file alone is enough.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / SAFETENSORS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    # One metadata key of sorted JSON: safetensors writes several keys in a random order, which
    # would make the same weights hash differently from run to run (the tiny preset must not).
    edalle = {'format': SAFETENSORS_FORMAT, 'config': model.config.to_json_dict(), 'pixel_range': model.pixel_range}
    tensors = {k: v.detach().to('cpu').contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(edalle, sort_keys=True)})
    return path


def read_safetensors(path: Path) -> tuple[VQGANConfig, StateDict, PixelRange]:
    from safetensors import safe_open

    with safe_open(str(path), framework='pt', device='cpu') as f:
        metadata = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    if METADATA_KEY in metadata:  # current layout; older files kept each value under its own key
        packed = json.loads(metadata[METADATA_KEY])
        metadata = {'config': json.dumps(packed['config']), 'pixel_range': packed['pixel_range']}
    sidecar = path.parent / 'config.json'
    raw_config: dict[str, Any] | None = None
    if 'config' in metadata:
        raw_config = json.loads(metadata['config'])
    elif sidecar.is_file():
        raw_config = json.loads(sidecar.read_text())
    config = VQGANConfig.from_dict(raw_config) if raw_config is not None else infer_config(state)
    pixel_range = metadata.get('pixel_range') or (raw_config or {}).get('pixel_range') or TAMING_PIXEL_RANGE
    if pixel_range not in PIXEL_RANGES:
        raise ValueError(f'{path}: unknown pixel_range {pixel_range!r} in metadata')
    return config, state, pixel_range


# --------------------------------------------------------------------------- vqgan-jax Flax msgpack

# Flax names list entries `down_0`, `block_1`, ...; taming's ModuleLists give `down.0`, `block.1`.
_FLAX_LIST_ENTRY = re.compile(r'^(down|up|block|attn)_(\d+)$')


def read_flax(path: Path) -> tuple[VQGANConfig, StateDict]:
    """`flax_model.msgpack` (+ `config.json` beside it) -> our config and state dict."""
    tree = read_msgpack(path)
    while isinstance(tree, dict) and len(tree) == 1 and next(iter(tree)) in ('params', 'model'):
        tree = next(iter(tree.values()))  # tolerate a {'params': ...} or base-model-prefix wrapper
    state = flax_to_torch(tree)
    config_file = path.parent / 'config.json'
    if config_file.is_file():
        raw = json.loads(config_file.read_text())
        if raw.get('double_z'):
            raise ValueError(f'{config_file}: double_z is true, which is a KL autoencoder, not a VQGAN')
        config = VQGANConfig.from_dict(raw)
    else:
        config = infer_config(state)
    return config, state


def flax_to_torch(tree: Mapping[str, Any]) -> StateDict:
    """Rename and re-lay-out vqgan-jax parameters as taming's torch state dict.

    kernel (kh, kw, in, out) -> weight (out, in, kh, kw); GroupNorm `scale` -> `weight`
    (old flax stored norm params as (1, 1, 1, C), so they are flattened); Embed
    `embedding` -> `weight`.
    """
    state: StateDict = {}
    for keys, value in _flatten(tree):
        *modules, leaf = keys
        parts: list[str] = []
        for i, name in enumerate(modules):
            match = _FLAX_LIST_ENTRY.match(name)
            parts += [match[1], match[2]] if match and (i == 0 or modules[i - 1] != 'mid') else [name]
        array = np.asarray(value, dtype=np.float32)
        if leaf == 'kernel':
            if array.ndim != 4:
                raise ValueError(f'{"/".join(keys)}: expected a 4-D conv kernel, got shape {array.shape}')
            array = array.transpose(3, 2, 0, 1)
        elif leaf in ('scale', 'bias'):
            array = array.reshape(-1)
        elif leaf != 'embedding':
            raise ValueError(f'{"/".join(keys)}: unknown Flax parameter kind {leaf!r}')
        name = 'bias' if leaf == 'bias' else 'weight'
        # msgpack arrays are read-only views of the file's bytes; torch wants its own writable copy
        state['.'.join([*parts, name])] = torch.from_numpy(np.require(array, requirements=['C', 'W']))
    return state


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out += _flatten(value, (*prefix, str(key)))
        else:
            out.append(((*prefix, str(key)), value))
    return out


# --------------------------------------------------------------------------- taming last.ckpt


def read_taming(path: Path) -> tuple[VQGANConfig, StateDict]:
    """taming `last.ckpt` (+ `model.yaml` beside it, if any) -> our config and state dict."""
    checkpoint = load_lightning_checkpoint(path)
    raw = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(raw, Mapping):
        raise ValueError(f'{path}: no state_dict in this checkpoint')
    state = {k: v for k, v in raw.items() if not k.startswith('loss.') and isinstance(v, torch.Tensor)}
    # beside the checkpoint, or taming's logs layout: <run>/checkpoints/last.ckpt + <run>/configs/model.yaml
    candidates = (path.parent / 'model.yaml', path.with_suffix('.yaml'), path.parent.parent / 'configs' / 'model.yaml')
    yaml_file = next((p for p in candidates if p.is_file()), None)
    config = taming_config_from_yaml(yaml_file) if yaml_file else infer_config(state)
    return config, state


def taming_config_from_yaml(path: Path) -> VQGANConfig:
    """taming's `model.yaml`: `model.params.{embed_dim, n_embed, ddconfig}`."""
    raw = read_yaml(path.read_text())
    params = raw.get('model', {}).get('params', {})
    ddconfig = dict(params.get('ddconfig', {}))
    if ddconfig.get('double_z'):
        raise ValueError(f'{path}: double_z is true, which is a KL autoencoder, not a VQGAN')
    for key in ('embed_dim', 'n_embed'):
        if key in params:
            ddconfig[key] = params[key]
    return VQGANConfig.from_dict(ddconfig)


def read_yaml(text: str) -> dict[str, Any]:
    """A taming config as a dict (PyYAML's safe loader: no Python objects built from the file)."""
    import yaml

    return yaml.safe_load(text) or {}


class _Stub(dict):
    """Inert stand-in for a class a checkpoint names but we do not import (Lightning callbacks, ...).

    A dict subclass with `append`/`extend` and `__setstate__`, so whatever way the pickle
    rebuilt the original object (REDUCE, NEWOBJ, SETITEMS, APPENDS, BUILD) succeeds and
    nothing runs.
    """

    _stub_of = '?'

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self._stub_args = args

    def __setstate__(self, state: Any) -> None:
        self._stub_state = state

    def append(self, item: Any) -> None:
        self.__dict__.setdefault('_stub_items', []).append(item)

    def extend(self, items: Any) -> None:
        for item in items:
            self.append(item)

    def __repr__(self) -> str:
        return f'<stub {self._stub_of}>'


# What a torch checkpoint legitimately needs rebuilt for real; everything else becomes a _Stub.
_SAFE_GLOBALS: dict[str, set[str]] = {
    'collections': {'OrderedDict', 'defaultdict'},
    'builtins': {'set', 'frozenset', 'slice', 'range', 'complex', 'bytearray', 'bytes', 'tuple', 'list', 'dict'},
    'copyreg': {'_reconstructor'},
    '_codecs': {'encode'},
    'torch': {'Size', 'device'},
    'torch._tensor': {'_rebuild_from_type_v2'},
    'torch.serialization': {'_get_layout'},
    'numpy': {'ndarray', 'dtype'},
    'numpy.core.multiarray': {'_reconstruct', 'scalar'},
    'numpy._core.multiarray': {'_reconstruct', 'scalar'},
}


class TolerantUnpickler(pickle.Unpickler):
    """Rebuild tensors and plain containers; turn every other named class into a `_Stub`."""

    _stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if self._is_safe(module, name):
            return super().find_class(module, name)
        key = (module, name)
        if key not in self._stubs:
            self._stubs[key] = type(name, (_Stub,), {'_stub_of': f'{module}.{name}', '__module__': module})
        return self._stubs[key]

    @staticmethod
    def _is_safe(module: str, name: str) -> bool:
        if name in _SAFE_GLOBALS.get(module, ()):
            return True
        if module == 'torch._utils' and name.startswith('_rebuild_'):
            return True
        if module == 'torch':  # dtypes, layouts and memory formats pickle as torch globals
            value = getattr(torch, name, None)
            return isinstance(value, (torch.dtype, torch.layout, torch.memory_format))
        if module.startswith('numpy') and name.endswith('DType'):  # numpy 2 dtype classes
            return True
        return False


def _tolerant_pickle_module() -> types.ModuleType:
    """What `torch.load(pickle_module=...)` needs: an `Unpickler` class and a `load` function."""
    module = types.ModuleType('edalle_tolerant_pickle')
    module.Unpickler = TolerantUnpickler  # type: ignore[attr-defined]
    module.load = lambda file, **kwargs: TolerantUnpickler(file, **kwargs).load()  # type: ignore[attr-defined]
    return module


def load_lightning_checkpoint(path: Path) -> Any:
    """`torch.load` a Lightning checkpoint on CPU with pytorch_lightning absent."""
    return torch.load(path, map_location='cpu', weights_only=False, pickle_module=_tolerant_pickle_module())
