"""The f16 VQGAN of taming-transformers in torch: encoder, codebook, decoder.

The module tree mirrors taming's `VQModel`, so its `state_dict()` names are taming's own
(`encoder.down.0.block.1.conv1.weight`, `quantize.embedding.weight`, ...) and a taming
`last.ckpt` loads with `strict=True` once its `loss.*` entries are dropped. Upstream
formats (Lightning pickles, Flax msgpack, our safetensors) are read in `vqgan_checkpoint.py`.

Pixels are always in [0, 1] at this module's API. Which range the loaded weights speak
natively is `VQGAN.pixel_range`, set by the loaders (see `vqgan_checkpoint` for why
dalle-mini's weights are `'zero_one'` and taming's are `'minus_one_one'`); the mapping
happens only at the two ends, in `encode` and `decode_latents`.

Shapes: B batch, C channels, H×W pixels, h×w tokens (H = 16h, W = 16w for the f16 model),
D = `embed_dim`, N = `n_embed`. The decoder is fully convolutional apart from its global
attention, so any token grid decodes: 16×16 for DALL·E mini, 16×28 for a widened image.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from edalle.config import VQGANConfig

PixelRange = Literal['zero_one', 'minus_one_one']
PIXEL_RANGES: tuple[PixelRange, ...] = ('zero_one', 'minus_one_one')

# The nearest-code search materialises a (rows, N) distance matrix; cap it at 2**24 floats
# (64 MiB in fp32), i.e. 1024 latent vectors at a time against the 16384-code book.
DISTANCE_ELEMENTS_PER_CHUNK = 2**24


def group_norm(channel_count: int) -> nn.GroupNorm:
    """Taming's `Normalize`: 32 groups and eps 1e-6 (not torch's default 1e-5)."""
    return nn.GroupNorm(num_groups=32, num_channels=channel_count, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm → swish → conv3 → norm → swish → conv3, plus a 1×1 `nin_shortcut` when widths differ."""

    def __init__(self, in_count: int, out_count: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_count)
        self.conv1 = nn.Conv2d(in_count, out_count, 3, padding=1)
        self.norm2 = group_norm(out_count)
        self.conv2 = nn.Conv2d(out_count, out_count, 3, padding=1)
        # dropout is 0 in every published config and the model only runs in inference, so it is left out
        self.nin_shortcut = nn.Conv2d(in_count, out_count, 1) if in_count != out_count else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W) -> (B, Cout, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head global self-attention over all H·W positions, with a residual.

    Global attention has no notion of grid size, which is what lets a decoder trained on
    16×16 grids run on 16×28 ones. `scaled_dot_product_attention` picks a fused kernel
    where one exists and its default scale, C^-½, is taming's.
    """

    def __init__(self, channel_count: int) -> None:
        super().__init__()
        self.norm = group_norm(channel_count)
        self.q = nn.Conv2d(channel_count, channel_count, 1)
        self.k = nn.Conv2d(channel_count, channel_count, 1)
        self.v = nn.Conv2d(channel_count, channel_count, 1)
        self.proj_out = nn.Conv2d(channel_count, channel_count, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        b, c, height, width = x.shape
        h = self.norm(x)

        def tokens(conv: nn.Conv2d) -> torch.Tensor:  # (B, C, H, W) -> (B, 1, H·W, C)
            return conv(h).flatten(2).transpose(1, 2).unsqueeze(1)

        h = F.scaled_dot_product_attention(tokens(self.q), tokens(self.k), tokens(self.v))  # (B, 1, H·W, C)
        h = h.squeeze(1).transpose(1, 2).reshape(b, c, height, width)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """Pad bottom and right by one, then a stride-2 3×3 conv: taming's asymmetric halving."""

    def __init__(self, channel_count: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channel_count, channel_count, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H/2, W/2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv."""

    def __init__(self, channel_count: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channel_count, channel_count, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, 2H, 2W)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class Level(nn.Module):
    """One resolution of the encoder or decoder: `block.i` with an `attn.i` after each, then a resample.

    Taming builds these as bare `nn.Module`s with `block`, `attn` and `downsample`/`upsample`
    attributes; the same attribute names give the same state-dict keys.
    """

    def __init__(self, in_count: int, out_count: int, block_count: int, has_attention: bool) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(in_count if i == 0 else out_count, out_count) for i in range(block_count))
        self.attn = nn.ModuleList(AttnBlock(out_count) for _ in range(block_count if has_attention else 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn) > 0:
                x = self.attn[i](x)
        return x


class DownLevel(Level):
    def __init__(self, in_count: int, out_count: int, block_count: int, has_attention: bool, is_last: bool) -> None:
        super().__init__(in_count, out_count, block_count, has_attention)
        self.downsample = None if is_last else Downsample(out_count)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return x if self.downsample is None else self.downsample(x)


class UpLevel(Level):
    def __init__(self, in_count: int, out_count: int, block_count: int, has_attention: bool, is_first: bool) -> None:
        super().__init__(in_count, out_count, block_count, has_attention)
        self.upsample = None if is_first else Upsample(out_count)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return x if self.upsample is None else self.upsample(x)


class MidBlock(nn.Module):
    """ResnetBlock → AttnBlock → ResnetBlock at the lowest resolution (taming's `mid`)."""

    def __init__(self, channel_count: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channel_count, channel_count)
        self.attn_1 = AttnBlock(channel_count)
        self.block_2 = ResnetBlock(channel_count, channel_count)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


def level_resolutions(config: VQGANConfig) -> list[int]:
    """The nominal side length at each level (256, 128, ..., 16 for f16).

    Attention placement is decided from these nominal sizes at construction, as in taming,
    not from the size of the tensor actually passed in.
    """
    return [config.resolution // 2**i for i in range(len(config.ch_mult))]


class Encoder(nn.Module):
    """Pixels in the weights' native range -> (B, z_channels, H/16, W/16)."""

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        c = config
        widths = [c.ch * m for m in c.ch_mult]
        in_widths = [c.ch, *widths[:-1]]
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)
        self.down = nn.ModuleList(
            DownLevel(in_widths[i], widths[i], c.num_res_blocks, res in c.attn_resolutions, i == len(widths) - 1)
            for i, res in enumerate(level_resolutions(c))
        )
        self.mid = MidBlock(widths[-1])
        self.norm_out = group_norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], c.z_channels, 3, padding=1)  # double_z is false for VQGANs

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, z, H/16, W/16)
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, h, w) -> pixels in the weights' native range, (B, 3, 16h, 16w).

    `up.i` is level i (up.0 is full resolution) but they run from the last to the first,
    as in taming; each decoder level has one more ResnetBlock than the encoder's.
    """

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        c = config
        widths = [c.ch * m for m in c.ch_mult]
        in_widths = [*widths[1:], widths[-1]]  # level i takes what level i+1 produced
        self.conv_in = nn.Conv2d(c.z_channels, widths[-1], 3, padding=1)
        self.mid = MidBlock(widths[-1])
        self.up = nn.ModuleList(
            UpLevel(in_widths[i], widths[i], c.num_res_blocks + 1, res in c.attn_resolutions, i == 0)
            for i, res in enumerate(level_resolutions(c))
        )
        self.norm_out = group_norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], c.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, z, h, w) -> (B, 3, 16h, 16w)
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """The codebook and the nearest-code search (inference only: no commitment loss).

    It is registered as `quantize`, so `VQGAN.quantize(z)` is this module's forward and the
    codebook's state-dict key is taming's `quantize.embedding.weight`.
    """

    def __init__(self, code_count: int, code_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(code_count, code_dim)  # (N, D)

    def nearest_codes(self, z_flat: torch.Tensor) -> torch.Tensor:  # (M, D) -> (M,) long
        """argmin_j ‖z − e_j‖², written as ‖z‖² + ‖e‖² − 2 z·e like taming and vqgan-jax.

        Keeping their formula (not just ‖e‖² − 2 z·e) keeps float rounding, and so the rare
        near-tie, the same as theirs. Rows go in chunks so memory stays bounded.
        """
        codes = self.embedding.weight.float()  # (N, D); fp32 so ‖z‖² cannot overflow a half-precision model
        code_sq = codes.pow(2).sum(1)  # (N,)
        rows_per_chunk = max(1, DISTANCE_ELEMENTS_PER_CHUNK // codes.shape[0])
        out = []
        for chunk in z_flat.float().split(rows_per_chunk):  # (m, D)
            distance = chunk.pow(2).sum(1, keepdim=True) + code_sq - 2 * chunk @ codes.t()  # (m, N)
            out.append(distance.argmin(1))
        return torch.cat(out) if out else z_flat.new_zeros(0, dtype=torch.long)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:  # (B, h, w) long -> (B, D, h, w)
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D, h, w) -> z_q (B, D, h, w), indices (B, h, w).

        When `z` carries gradients, z_q is the straight-through estimate z + (e − z).detach()
        (equal to the codes in value, gradient of the identity), as VQGAN-CLIP-style
        optimisers need; otherwise z_q is exactly the codebook rows.
        """
        b, d, h, w = z.shape
        with torch.no_grad():
            indices = self.nearest_codes(z.detach().permute(0, 2, 3, 1).reshape(-1, d)).view(b, h, w)
        z_q = self.embed(indices)
        if z.requires_grad and torch.is_grad_enabled():
            z_q = z + (z_q - z).detach()
        return z_q, indices


class VQGAN(nn.Module):
    """The whole VQGAN with taming's module names; pixels in [0, 1] at every public method."""

    def __init__(self, config: VQGANConfig, *, pixel_range: PixelRange = 'minus_one_one') -> None:
        super().__init__()
        if any(c * config.ch % 32 for c in config.ch_mult):
            raise ValueError(f'every level width must be a multiple of 32 for GroupNorm(32): ch={config.ch}')
        self.config = config
        self.pixel_range: PixelRange = pixel_range
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    @classmethod
    def random(cls, config: VQGANConfig, seed: int) -> VQGAN:
        """Deterministic random weights (the `tiny` preset, tests), whatever the global RNG state.

        Returned like a loaded model: eval mode, parameters frozen.

        torch's default init everywhere, and N(0, 1) codes (taming's U(±1/N) codes are all
        near zero, so every token would decode to nearly the same patch). The output range
        is declared [-1, 1], the convention of the architecture, so a random decoder's
        near-zero outputs land around mid-grey rather than being clamped to black.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config, pixel_range='minus_one_one')
        return model.eval().requires_grad_(False)

    @property
    def codebook(self) -> torch.Tensor:  # (N, D)
        return self.quantize.embedding.weight

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config.ch_mult) - 1)

    def _to_native(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels * 2 - 1 if self.pixel_range == 'minus_one_one' else pixels

    def _from_native(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1) / 2 if self.pixel_range == 'minus_one_one' else x

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> continuous latents (B, D, H/16, W/16), before quantisation."""
        f = self.downsample_factor
        if pixels.dim() != 4 or pixels.shape[2] % f or pixels.shape[3] % f:
            raise ValueError(f'expected (B, 3, H, W) with H and W multiples of {f}, got {tuple(pixels.shape)}')
        return self.quant_conv(self.encoder(self._to_native(pixels)))

    def embed_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, h, w) long token grid -> codebook vectors z_q (B, D, h, w)."""
        if indices.dim() != 3:
            raise ValueError(f'expected a (B, h, w) token grid, got {tuple(indices.shape)}')
        return self.quantize.embed(indices)

    def decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> (B, 3, 16h, 16w) in the [0, 1] convention, NOT clamped.

        Left unclamped so gradients flow everywhere (the expander optimises latents through
        this and clamps itself).
        """
        return self._from_native(self.decoder(self.post_quant_conv(z_q)))

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, h, w) long -> (B, 3, 16h, 16w) clamped to [0, 1].

        On CPU the latents go in channels-last: oneDNN then runs every convolution in that
        layout, 12 % faster for a batch of nine 256×256 decodes on a 2-core Zen 4 (values
        equal to float rounding). GPUs keep the default layout, which is not measured here.
        """
        z_q = self.embed_tokens(indices)
        if z_q.device.type == 'cpu':
            z_q = z_q.contiguous(memory_format=torch.channels_last)
        return self.decode_latents(z_q).clamp(0, 1).contiguous()
