"""Model configurations: frozen dataclasses, one per network, and the named sizes.

Every network module takes one of these as its only structural argument (nanoGPT's
`GPTConfig`, flax's `TransformerConfig`). The published sizes live here once, next to the
`tiny` sizes the tests and CPU trials use; `edalle.presets` combines them with file lists.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

IMAGE_TOKEN_COUNT = 256  # DALL·E mini always draws a 16 × 16 grid of VQGAN codes
IMAGE_GRID_SIDE = 16
TEXT_TOKEN_COUNT = 64  # max_text_length of every published DalleBart
VQGAN_DOWNSAMPLE = 16  # pixels per token side for the f16 VQGAN
UPSCALE = 4  # every side of an upscaled picture is this many times the input's


@dataclass(frozen=True)
class BartConfig:
    """DalleBart sizes. Field names follow the published `config.json` keys."""

    d_model: int = 1024
    encoder_layers: int = 12
    decoder_layers: int = 12
    encoder_attention_heads: int = 16
    decoder_attention_heads: int = 16
    encoder_ffn_dim: int = 2730  # GLU inner width
    decoder_ffn_dim: int = 2730
    encoder_vocab_size: int = 50264  # BART BPE text vocabulary
    image_vocab_size: int = 16384  # decoder embeddings = image_vocab_size + 1 (the start token)
    max_text_length: int = TEXT_TOKEN_COUNT
    image_length: int = IMAGE_TOKEN_COUNT
    decoder_start_token_id: int = 16384
    pad_token_id: int = 1  # text padding id (BART's <pad>)
    bos_token_id: int = 0  # text <s>
    eos_token_id: int = 2  # text </s>
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        assert self.d_model % self.encoder_attention_heads == 0
        assert self.d_model % self.decoder_attention_heads == 0

    @classmethod
    def from_json(cls, path: str | Path) -> BartConfig:
        """Read a published DalleBart `config.json`, keeping only the keys we use.

        The published files carry many more keys (variant switches that are the same for
        every released model); unknown keys are ignored on purpose.
        """
        raw = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in raw.items() if k in known}
        # Published configs store the text special ids separately; image ids are derived.
        if 'decoder_start_token_id' not in raw and 'image_vocab_size' in raw:
            kwargs['decoder_start_token_id'] = raw['image_vocab_size']
        return cls(**kwargs)

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VQGANConfig:
    """The taming f16 VQGAN. Defaults are `vqgan_imagenet_f16_16384` (76.1M params)."""

    embed_dim: int = 256
    n_embed: int = 16384
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    z_channels: int = 256
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VQGANConfig:
        known = {f.name for f in fields(cls)}
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items() if k in known}
        return cls(**kwargs)

    def to_json_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out['ch_mult'] = list(self.ch_mult)
        out['attn_resolutions'] = list(self.attn_resolutions)
        return out


@dataclass(frozen=True)
class ClipConfig:
    """Which open_clip model ranks candidates and guides the expander."""

    model_name: str = 'ViT-B-32'
    pretrained: str = 'openai'  # an open_clip tag (needs the hub) or a local checkpoint file


BART_CONFIGS: dict[str, BartConfig] = {
    # enc 202.6M + dec 235.3M params
    'mini': BartConfig(),
    # enc 1110.2M + dec 1477.7M params
    'mega': BartConfig(
        d_model=2048,
        encoder_layers=24,
        decoder_layers=24,
        encoder_attention_heads=32,
        decoder_attention_heads=32,
        encoder_ffn_dim=4096,
        decoder_ffn_dim=4096,
        encoder_vocab_size=50272,
        image_vocab_size=16415,
        decoder_start_token_id=16384,
    ),
    # the real architecture at toy size: for tests and trying the plumbing on a CPU
    'tiny': BartConfig(
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=96,
        decoder_ffn_dim=96,
        encoder_vocab_size=512,
        image_vocab_size=1024,
        decoder_start_token_id=1024,
    ),
}

VQGAN_CONFIGS: dict[str, VQGANConfig] = {
    'f16_16384': VQGANConfig(),
    # same five levels (f = 16) and attention at 16 × 16, GroupNorm(32)-compatible widths
    'tiny': VQGANConfig(embed_dim=32, n_embed=1024, ch=32, num_res_blocks=1, z_channels=32),
}
