"""Reading a preset's model files into models: the tokenizer, DalleBart, the VQGAN and CLIP.

The engine loads through these once per process; `edalle models verify` loads through them to check
shapes. Each reads the files where `edalle.presets` says they live, and imports its model code only
when called, so importing this module costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edalle.presets import Preset, models_dir

if TYPE_CHECKING:
    from edalle.models.clip import ClipModel
    from edalle.models.vqgan import VQGAN
    from edalle.text import TextTokenizer


def load_tokenizer(preset: Preset, data_dir: Path) -> TextTokenizer:
    from edalle.text import TextTokenizer as Tokenizer

    directory = preset.dalle.path(models_dir(data_dir))
    frequencies = directory / 'enwiki-words-frequency.txt'
    return Tokenizer.from_dir(directory, word_frequencies=frequencies if frequencies.is_file() else None)


def load_bart(preset: Preset, data_dir: Path) -> tuple[Any, Any]:
    """(config, params) of the preset's DalleBart, read from its `config.json` + msgpack (numpy, host memory)."""
    from edalle.models import bart_checkpoint

    directory = preset.dalle.path(models_dir(data_dir))
    config = bart_checkpoint.load_config(directory)
    return config, bart_checkpoint.read_params(directory / 'flax_model.msgpack', config)


def prepare_sampler_for(config: Any, params: Any, dtype: str) -> Any:
    """The sampler's copy of the DalleBart weights (`sampling.prepare_sampler`), in `dtype`.

    It empties `params` as it goes (`release`), so the weights are in memory once at a time.
    """
    import jax.numpy as jnp

    from edalle.models.sampling import prepare_sampler

    return prepare_sampler(params, config, jnp.dtype(dtype), release=True)


def load_vqgan_for(preset: Preset, data_dir: Path, device: str = 'cpu') -> VQGAN:
    from edalle.models.vqgan_checkpoint import load_vqgan

    return load_vqgan(preset.vqgan_files.path(models_dir(data_dir)), device=device)


def load_clip(preset: Preset, data_dir: Path, device: str = 'cpu') -> ClipModel:
    from dataclasses import replace

    from edalle.models.clip import ClipModel

    directory = preset.clip_files.path(models_dir(data_dir))
    if preset.generated:
        return ClipModel.load_tiny(directory / 'model.safetensors', device=device)
    weights = directory / preset.clip_files.files[0].filename
    return ClipModel.load(replace(preset.clip, pretrained=str(weights)), device=device)
