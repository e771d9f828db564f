"""Named model presets: which networks, at which sizes, from which files.

A preset ties a DalleBart size to the VQGAN that decodes its tokens and the CLIP that ranks
them, and says where each component's files live under `<data dir>/models/`. `mini` and
`mega` come from the Hugging Face Hub (`edalle models download`); `tiny` is generated
locally with seeded random weights (`edalle.weights.ensure_tiny`).

Components shared by presets (the VQGAN, CLIP) share one directory, so downloading `mega`
after `mini` fetches only the bigger transformer.

An add-on is a set of files that presets can use beside their own and that is fetched on its
own: `upscale` (Real-ESRGAN x4plus, `edalle models download --preset upscale`) serves `mini`
and `mega` alike; `tiny` generates its own small network of the same architecture. `MODEL_SETS`
holds presets and add-ons together: everything `edalle models download/import/verify/list` handles.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from edalle.config import BART_CONFIGS, VQGAN_CONFIGS, BartConfig, ClipConfig, VQGANConfig


def data_dir_from_env(explicit: str | Path | None = None) -> Path:
    """The data directory: an explicit path, else `$EDALLE_DATA_DIR`, else `./data`."""
    return Path(explicit or os.environ.get('EDALLE_DATA_DIR') or 'data')


def models_dir(data_dir: Path) -> Path:
    """Where every preset's files live: `<data dir>/models/<component directory>/`."""
    return data_dir / 'models'


# dalle-mini's VQGAN at the revision its inference notebook pins.
VQGAN_REPO = 'dalle-mini/vqgan_imagenet_f16_16384'
VQGAN_REVISION = 'e93a26e7707683d349bf5d5c41c5b0ef69b677a9'
# OpenAI's CLIP ViT-B/32 as open_clip publishes it on the hub.
CLIP_REPO = 'timm/vit_base_patch32_clip_224.openai'
CLIP_WEIGHTS = 'open_clip_model.safetensors'
# Real-ESRGAN x4plus (BSD-3-Clause): `RealESRGAN_x4plus.pth` of the xinntao/Real-ESRGAN GitHub
# release v0.1.0, 67,040,989 bytes, fetched from a hub mirror (Stability Matrix's upscaler collection)
# at a pinned commit. The pinned SHA-256 is the release file's, so a mirror copy that ever differed
# from it would be refused, not used.
REALESRGAN_REPO = 'LykosAI/Upscalers'
REALESRGAN_REVISION = '28a279ec60b5c47c9f39381dcaa997b9402ac09d'
REALESRGAN_FILE = 'RealESRGAN/RealESRGAN_x4plus.pth'
REALESRGAN_SHA256 = '4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1'


@dataclass(frozen=True)
class HubFile:
    """One file of a component: where it comes from on the hub; locally it keeps the last part of that path."""

    repo_id: str
    filename: str  # path inside the hub repository
    revision: str | None = None
    required: bool = True
    sha256: str | None = None  # the published file's hash, where known: a download or import that differs is refused

    @property
    def local_name(self) -> str:
        return self.filename.rsplit('/', 1)[-1]


@dataclass(frozen=True)
class Component:
    """A directory of files that together make one network (or the tokenizer with it)."""

    kind: str  # 'dalle' | 'vqgan' | 'clip' | 'upscale'
    directory: str  # relative to <data dir>/models
    files: tuple[HubFile, ...] = ()

    def path(self, models_dir: Path) -> Path:
        return models_dir / self.directory

    def required_paths(self, models_dir: Path) -> list[Path]:
        return [self.path(models_dir) / f.local_name for f in self.files if f.required]


@dataclass(frozen=True)
class Preset:
    name: str
    bart: BartConfig
    vqgan: VQGANConfig
    clip: ClipConfig
    dalle: Component
    vqgan_files: Component
    clip_files: Component
    generated: bool = False  # made locally from seeds, never downloaded
    description: str = field(default='', compare=False)
    # ×4 super-resolution weights that come with this preset's own files (tiny's); None: the `upscale` add-on's.
    upscaler: Component | None = None

    @property
    def components(self) -> tuple[Component, ...]:
        own = (self.dalle, self.vqgan_files, self.clip_files)
        return own if self.upscaler is None else (*own, self.upscaler)

    @property
    def upscaler_files(self) -> Component:
        """Where this preset's pictures get their ×4 upscaler from."""
        return self.upscaler or UPSCALE_FILES

    def missing_files(self, models_dir: Path) -> list[Path]:
        return [p for c in self.components for p in c.required_paths(models_dir) if not p.is_file()]


def _dalle_component(repo_id: str, directory: str) -> Component:
    names = ('config.json', 'flax_model.msgpack', 'vocab.json', 'merges.txt')
    files = tuple(HubFile(repo_id, name) for name in names)
    # Only used to split hashtags; the normaliser works without it.
    files += (HubFile(repo_id, 'enwiki-words-frequency.txt', required=False),)
    return Component('dalle', directory, files)


_VQGAN = Component(
    'vqgan',
    'vqgan_imagenet_f16_16384',
    (HubFile(VQGAN_REPO, 'config.json', VQGAN_REVISION), HubFile(VQGAN_REPO, 'flax_model.msgpack', VQGAN_REVISION)),
)
_CLIP = Component('clip', 'clip-vit-b-32-openai', (HubFile(CLIP_REPO, CLIP_WEIGHTS),))
_CLIP_CONFIG = ClipConfig(model_name='ViT-B-32', pretrained='openai')

_TINY_DALLE_FILES = ('config.json', 'flax_model.msgpack', 'vocab.json', 'merges.txt')

UPSCALE_FILES = Component(
    'upscale',
    'realesrgan-x4plus',
    (HubFile(REALESRGAN_REPO, REALESRGAN_FILE, REALESRGAN_REVISION, sha256=REALESRGAN_SHA256),),
)

PRESETS: dict[str, Preset] = {
    'mini': Preset(
        name='mini',
        bart=BART_CONFIGS['mini'],
        vqgan=VQGAN_CONFIGS['f16_16384'],
        clip=_CLIP_CONFIG,
        dalle=_dalle_component('dalle-mini/dalle-mini', 'dalle-mini'),
        vqgan_files=_VQGAN,
        clip_files=_CLIP,
        description='DALL·E mini (0.4B parameters), about 2.5 GB of files',
    ),
    'mega': Preset(
        name='mega',
        bart=BART_CONFIGS['mega'],
        vqgan=VQGAN_CONFIGS['f16_16384'],
        clip=_CLIP_CONFIG,
        dalle=_dalle_component('dalle-mini/dalle-mega', 'dalle-mega'),
        vqgan_files=_VQGAN,
        clip_files=_CLIP,
        description='DALL·E mega (2.6B parameters), about 11 GB of files; wants a GPU',
    ),
    'tiny': Preset(
        name='tiny',
        bart=BART_CONFIGS['tiny'],
        vqgan=VQGAN_CONFIGS['tiny'],
        clip=ClipConfig(model_name='tiny', pretrained='model.safetensors'),
        dalle=Component(
            'dalle',
            'tiny/dalle',
            tuple(HubFile('', n) for n in ('config.json', 'flax_model.msgpack', 'vocab.json', 'merges.txt')),
        ),
        vqgan_files=Component('vqgan', 'tiny/vqgan', (HubFile('', 'model.safetensors'),)),
        clip_files=Component('clip', 'tiny/clip', (HubFile('', 'model.safetensors'),)),
        generated=True,
        description='the real architectures at toy size with seeded random weights: draws noise, for tests and CPU trials',
        upscaler=Component('upscale', 'tiny/upscale', (HubFile('', 'rrdbnet_x4.pth'),)),
    ),
}


@dataclass(frozen=True)
class AddOn:
    """Files presets use beside their own, fetched on their own (`edalle models download --preset NAME`)."""

    name: str
    components: tuple[Component, ...]
    description: str = field(default='', compare=False)
    generated: bool = False  # like `Preset.generated`: add-ons are always downloaded or imported

    def missing_files(self, models_dir: Path) -> list[Path]:
        return [p for c in self.components for p in c.required_paths(models_dir) if not p.is_file()]


ADD_ONS: dict[str, AddOn] = {
    'upscale': AddOn(
        name='upscale',
        components=(UPSCALE_FILES,),
        description='Real-ESRGAN x4plus (BSD-3-Clause), ×4 super-resolution for mini and mega, 67 MB',
    ),
}

ModelSet = Preset | AddOn
# Everything `edalle models download/import/verify/list --preset NAME` handles.
MODEL_SETS: dict[str, ModelSet] = {**PRESETS, **ADD_ONS}


class UnknownPreset(ValueError):
    """A preset name that is not in `PRESETS`; the message lists the known ones."""


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownPreset(f'Unknown preset {name!r}; choose one of: {", ".join(PRESETS)}.') from None


def get_model_set(name: str) -> ModelSet:
    """A preset or an add-on, for the commands that fetch, import, verify and list files."""
    try:
        return MODEL_SETS[name]
    except KeyError:
        raise UnknownPreset(f'Unknown preset {name!r}; choose one of: {", ".join(MODEL_SETS)}.') from None
