"""The torch VQGAN against taming-transformers, and its loaders against files in the published layouts.

Everything runs on CPU with narrow random networks; no network access, no real weights.
taming-transformers-rom1504 is the oracle (a test-only dependency); its plain modules
import without pytorch-lightning.
"""

from __future__ import annotations

import json
import pickle
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edalle.config import VQGAN_CONFIGS, VQGANConfig
from edalle.models import vqgan as vqgan_module
from edalle.models import vqgan_checkpoint
from edalle.models.vqgan import VQGAN
from edalle.models.vqgan_checkpoint import load_vqgan, save_safetensors

# Taming's full layer structure (5 levels, attention at 16, 2 res blocks per level) at small widths.
PARITY_CONFIG = VQGANConfig(embed_dim=16, n_embed=64, ch=32, num_res_blocks=2, z_channels=32)
# The checkpoint plumbing tests use the project's tiny preset (1 res block per level).
TINY_CONFIG = VQGAN_CONFIGS['tiny']
TOLERANCE = 1e-4  # float32 re-association (fused attention, silu) between two correct implementations


@pytest.fixture(autouse=True)
def vqgan_seeded():
    torch.manual_seed(0)
    yield


def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Give every tensor a distinctive value, so that any mis-mapped weight changes the output.

    Default init leaves GroupNorm at weight 1 / bias 0 and taming's codebook at ±1/N; both
    would hide a swapped norm or a wrong codebook layout.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            noise = torch.randn(tensor.shape, generator=g)
            if 'norm' in name and name.endswith('weight'):
                tensor.copy_(1 + 0.2 * noise)
            elif name.endswith('bias'):
                tensor.copy_(0.1 * noise)
            elif 'embedding' in name:
                tensor.copy_(noise)
    return model


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------- parity with taming


class TamingVQ(nn.Module):
    """taming's VQModel minus Lightning and the loss: same children, so the same state-dict names."""

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        model = pytest.importorskip('taming.modules.diffusionmodules.model')
        quantize = pytest.importorskip('taming.modules.vqvae.quantize')
        ddconfig = dict(
            ch=config.ch,
            out_ch=config.out_ch,
            ch_mult=config.ch_mult,
            num_res_blocks=config.num_res_blocks,
            attn_resolutions=config.attn_resolutions,
            in_channels=config.in_channels,
            resolution=config.resolution,
            z_channels=config.z_channels,
            double_z=False,
            dropout=0.0,
        )
        self.encoder = model.Encoder(**ddconfig)
        self.decoder = model.Decoder(**ddconfig)
        self.quantize = quantize.VectorQuantizer2(config.n_embed, config.embed_dim, beta=0.25, sane_index_shape=True)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    def decode_native(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z_q))

    def encode_native(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.quant_conv(self.encoder(x))
        z_q, _, (_, _, indices) = self.quantize(z)
        return z, z_q, indices


@pytest.fixture(scope='module')
def vqgan_taming_pair() -> tuple[TamingVQ, VQGAN]:
    torch.manual_seed(1)
    taming = randomize_(TamingVQ(PARITY_CONFIG), seed=1).eval()
    with torch.no_grad():  # codes drawn from real latents, so that encodings spread over many of them
        probe = taming.quant_conv(taming.encoder(torch.rand(1, 3, 128, 128) * 2 - 1))  # (1, D, 8, 8): 64 vectors
        codes = probe.flatten(2)[0].t()  # (64, D)
        taming.quantize.embedding.weight.copy_(codes + 0.1 * codes.std() * torch.randn_like(codes))
    ours = VQGAN(PARITY_CONFIG, pixel_range='minus_one_one').eval()
    ours.load_state_dict(taming.state_dict(), strict=True)
    return taming, ours


@pytest.mark.parametrize('grid', [(16, 16), (16, 28)])
def test_decode_matches_taming(vqgan_taming_pair, grid):
    taming, ours = vqgan_taming_pair
    indices = torch.randint(0, PARITY_CONFIG.n_embed, (1, *grid), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        z_q = taming.quantize.get_codebook_entry(indices.flatten(), (1, *grid, PARITY_CONFIG.embed_dim))
        expected = (taming.decode_native(z_q) + 1) / 2  # taming speaks [-1, 1]; our API speaks [0, 1]
        assert torch.equal(ours.embed_tokens(indices), z_q)
        got = ours.decode_latents(z_q)
    assert got.shape == (1, 3, 16 * grid[0], 16 * grid[1])
    assert expected.std() > 0.1  # the comparison is not between two near-constant images
    assert max_diff(got, expected) < TOLERANCE


def test_encode_and_quantize_match_taming(vqgan_taming_pair):
    taming, ours = vqgan_taming_pair
    pixels = torch.rand(2, 3, 64, 112, generator=torch.Generator().manual_seed(3))  # a non-square 4×7 grid
    with torch.no_grad():
        z_expected, z_q_expected, indices_expected = taming.encode_native(pixels * 2 - 1)
        z = ours.encode(pixels)
        z_q, indices = ours.quantize(z)
    assert z.shape == (2, PARITY_CONFIG.embed_dim, 4, 7)
    assert max_diff(z, z_expected) < TOLERANCE
    assert indices.dtype == torch.long and indices.shape == (2, 4, 7)
    assert len(indices.unique()) > 4  # the search is not trivially picking one code
    assert torch.equal(indices, indices_expected)
    assert torch.equal(z_q, ours.embed_tokens(indices))  # exactly the codes (no straight-through without grad)
    assert max_diff(z_q, z_q_expected) < 1e-6  # taming always adds z + (z_q - z).detach(), which rounds


@pytest.mark.parametrize(
    'swap',
    [
        ('decoder.mid.block_1.conv1.weight', 'decoder.mid.block_1.conv2.weight'),
        ('decoder.up.4.attn.0.q.weight', 'decoder.up.4.attn.0.k.weight'),
        ('decoder.up.1.block.1.norm1.weight', 'decoder.up.1.block.1.norm2.weight'),
    ],
)
def test_wrong_mapping_is_caught(vqgan_taming_pair, swap):
    """The parity check has teeth: swapping two same-shaped tensors breaks it by far more than the tolerance."""
    taming, _ = vqgan_taming_pair
    state = dict(taming.state_dict())
    a, b = swap
    assert state[a].shape == state[b].shape
    state[a], state[b] = state[b], state[a]
    wrong = VQGAN(PARITY_CONFIG).eval()
    wrong.load_state_dict(state, strict=True)
    indices = torch.randint(0, PARITY_CONFIG.n_embed, (1, 4, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        z_q = wrong.embed_tokens(indices)
        expected = (taming.decode_native(z_q) + 1) / 2
        assert max_diff(wrong.decode_latents(z_q), expected) > 100 * TOLERANCE


def test_state_dict_names_match_the_published_checkpoint():
    """All 343 taming names of vqgan_imagenet_f16_16384 (from the key list in shared/reference) and their shapes."""
    with torch.device('meta'):
        model = VQGAN(VQGAN_CONFIGS['f16_16384'])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(shapes) == 343
    assert shapes['quantize.embedding.weight'] == (16384, 256)
    assert shapes['encoder.down.4.attn.1.proj_out.weight'] == (512, 512, 1, 1)
    assert shapes['encoder.down.2.block.0.nin_shortcut.weight'] == (256, 128, 1, 1)
    assert shapes['decoder.up.4.attn.2.q.weight'] == (512, 512, 1, 1)
    assert shapes['decoder.up.1.upsample.conv.weight'] == (128, 128, 3, 3)
    assert shapes['decoder.conv_out.weight'] == (3, 128, 3, 3)
    assert 'decoder.up.0.upsample.conv.weight' not in shapes and 'encoder.down.4.downsample.conv.weight' not in shapes
    assert sum(int(np.prod(s)) for s in shapes.values()) == 76_073_859  # encoder 29.3M + decoder 42.4M + the rest


# --------------------------------------------------------------------------- the module on its own


@pytest.fixture(scope='module')
def vqgan_tiny() -> VQGAN:
    return randomize_(VQGAN.random(TINY_CONFIG, seed=5), seed=5).eval()


@pytest.mark.parametrize('grid', [(1, 1), (2, 3), (5, 2)])
def test_decodes_any_grid(vqgan_tiny, grid):
    indices = torch.randint(0, TINY_CONFIG.n_embed, (2, *grid))
    with torch.no_grad():
        images = vqgan_tiny.decode_tokens(indices)
    assert images.shape == (2, 3, 16 * grid[0], 16 * grid[1])
    assert images.dtype == torch.float32


def test_decode_tokens_clamps_but_decode_latents_does_not(vqgan_tiny):
    indices = torch.randint(0, TINY_CONFIG.n_embed, (1, 2, 3))
    with torch.no_grad():
        raw = vqgan_tiny.decode_latents(vqgan_tiny.embed_tokens(indices) * 5)
        clamped = vqgan_tiny.decode_tokens(indices)
        unclamped = vqgan_tiny.decode_latents(vqgan_tiny.embed_tokens(indices))
    assert raw.min() < 0 or raw.max() > 1
    assert clamped.min() >= 0 and clamped.max() <= 1
    # equal up to float rounding: decode_tokens runs the convolutions channels-last on CPU
    torch.testing.assert_close(clamped, unclamped.clamp(0, 1), rtol=0, atol=1e-5)


def test_decode_latents_carries_gradients(vqgan_tiny):
    z = vqgan_tiny.embed_tokens(torch.randint(0, TINY_CONFIG.n_embed, (1, 2, 2))).detach().requires_grad_()
    vqgan_tiny.decode_latents(z).mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_encode_shape_and_size_check(vqgan_tiny):
    with torch.no_grad():
        z = vqgan_tiny.encode(torch.rand(2, 3, 32, 48))
    assert z.shape == (2, TINY_CONFIG.embed_dim, 2, 3)
    with pytest.raises(ValueError, match='multiples of 16'):
        vqgan_tiny.encode(torch.rand(1, 3, 40, 48))


def test_quantize_matches_brute_force(vqgan_tiny, monkeypatch):
    monkeypatch.setattr(vqgan_module, 'DISTANCE_ELEMENTS_PER_CHUNK', 7 * TINY_CONFIG.n_embed)  # 7-row chunks
    z = torch.randn(3, TINY_CONFIG.embed_dim, 4, 5)
    z_q, indices = vqgan_tiny.quantize(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, TINY_CONFIG.embed_dim)
    brute = torch.cdist(flat.double(), vqgan_tiny.codebook.detach().double()).argmin(1).view(3, 4, 5)
    assert torch.equal(indices, brute)
    assert torch.equal(z_q, vqgan_tiny.codebook[indices].permute(0, 3, 1, 2))


def test_quantize_straight_through(vqgan_tiny):
    z = torch.randn(1, TINY_CONFIG.embed_dim, 2, 2, requires_grad=True)
    z_q, indices = vqgan_tiny.quantize(z)
    assert torch.allclose(z_q, vqgan_tiny.embed_tokens(indices), atol=1e-6)
    z_q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_pixel_range_maps_only_the_ends(vqgan_tiny):
    """The same weights under the two conventions differ by exactly the affine map at each end."""
    z_q = vqgan_tiny.embed_tokens(torch.randint(0, TINY_CONFIG.n_embed, (1, 2, 2)))
    pixels = torch.rand(1, 3, 32, 32)
    outputs = {}
    with torch.no_grad():
        for pixel_range in ('zero_one', 'minus_one_one'):
            vqgan_tiny.pixel_range = pixel_range
            outputs[pixel_range] = vqgan_tiny.decode_latents(z_q), vqgan_tiny.encode(pixels)
        vqgan_tiny.pixel_range = 'zero_one'
        encoded_shifted = vqgan_tiny.encode(pixels * 2 - 1)
    vqgan_tiny.pixel_range = 'minus_one_one'
    assert torch.allclose(outputs['minus_one_one'][0], (outputs['zero_one'][0] + 1) / 2, atol=1e-6)
    assert torch.allclose(outputs['minus_one_one'][1], encoded_shifted, atol=1e-5)


def test_random_is_deterministic_and_varied():
    state = torch.get_rng_state()
    a, b, c = VQGAN.random(TINY_CONFIG, 7), VQGAN.random(TINY_CONFIG, 7), VQGAN.random(TINY_CONFIG, 8)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.codebook, c.codebook)
    with torch.no_grad():
        images = a.decode_tokens(torch.randint(0, TINY_CONFIG.n_embed, (2, 2, 2)))
    patch_means = images.unfold(2, 16, 16).unfold(3, 16, 16).mean((-1, -2))  # (B, 3, 2, 2)
    assert patch_means.std() > 0.01  # different tokens draw different patches
    assert 0.2 < images.mean() < 0.8  # around mid-grey, not clamped to black or white


# --------------------------------------------------------------------------- checkpoint files


@pytest.fixture(scope='module')
def vqgan_source() -> VQGAN:
    return randomize_(VQGAN.random(TINY_CONFIG, seed=11), seed=11).eval()


def assert_same_model(loaded: VQGAN, source: VQGAN) -> None:
    expected = source.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    indices = torch.randint(0, TINY_CONFIG.n_embed, (1, 2, 3), generator=torch.Generator().manual_seed(12))
    pixel_range = loaded.pixel_range
    loaded.pixel_range = source.pixel_range
    with torch.no_grad():
        assert torch.equal(loaded.decode_tokens(indices), source.decode_tokens(indices))
    loaded.pixel_range = pixel_range


TAMING_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: {embed_dim}
    n_embed: {n_embed}
    ddconfig:
      double_z: false
      z_channels: {z_channels}
      resolution: 256
      in_channels: 3
      out_ch: 3
      ch: {ch}
      ch_mult:
      - 1
      - 1
      - 2
      - 2
      - 4
      num_res_blocks: {num_res_blocks}
      attn_resolutions: [16]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params:
        disc_conditional: false
        disc_in_channels: 3
        disc_start: 0
        disc_weight: 0.75
        codebook_weight: 1.0
"""


def write_lightning_checkpoint(path: Path, state: dict[str, torch.Tensor], zip_format: bool = True) -> None:
    """A PL-1.0-style `last.ckpt`: callback states keyed by a Lightning class, loss weights, optimizer state.

    The Lightning classes live in a fake `pytorch_lightning` that exists only while saving,
    as on a machine where the checkpoint was written; the loader must never need it.
    """
    names = ['pytorch_lightning', 'pytorch_lightning.callbacks', 'pytorch_lightning.callbacks.model_checkpoint']
    fake = {name: types.ModuleType(name) for name in names}
    model_checkpoint = type('ModelCheckpoint', (), {'__module__': names[-1]})
    attribute_dict = type('AttributeDict', (dict,), {'__module__': names[-1]})
    fake[names[-1]].ModelCheckpoint = model_checkpoint
    fake[names[-1]].AttributeDict = attribute_dict
    callback = model_checkpoint()
    callback.monitor, callback.best_model_path = 'val/rec_loss', '/logs/checkpoints/epoch=7.ckpt'
    g = torch.Generator().manual_seed(13)
    loss = {
        'loss.perceptual_loss.scaling_layer.shift': torch.randn(1, 3, 1, 1, generator=g),
        'loss.perceptual_loss.scaling_layer.scale': torch.randn(1, 3, 1, 1, generator=g),
        'loss.perceptual_loss.net.slice1.0.weight': torch.randn(64, 3, 3, 3, generator=g),
        'loss.perceptual_loss.lin0.model.1.weight': torch.randn(1, 64, 1, 1, generator=g),
        'loss.discriminator.main.0.weight': torch.randn(64, 3, 4, 4, generator=g),
        'loss.discriminator.main.3.running_mean': torch.zeros(128),
        'loss.discriminator.main.3.num_batches_tracked': torch.tensor(12345),
    }
    checkpoint = {
        'epoch': 7,
        'global_step': 12345,
        'pytorch-lightning_version': '1.0.8',
        'callbacks': {model_checkpoint: {'best_model_score': torch.tensor(0.25), 'best_model_path': 'x.ckpt'}},
        'checkpoint_callback': callback,
        'optimizer_states': [
            {
                'state': {0: {'step': 10, 'exp_avg': torch.randn(8, generator=g), 'exp_avg_sq': torch.rand(8)}},
                'param_groups': [{'lr': 4.5e-6, 'betas': (0.5, 0.9), 'eps': 1e-8, 'params': [0]}],
            }
        ],
        'lr_schedulers': [],
        'hyper_parameters': attribute_dict(embed_dim=TINY_CONFIG.embed_dim, ckpt_path=None),
        'state_dict': {**{k: v.clone() for k, v in state.items()}, **loss},
    }
    sys.modules.update(fake)
    try:
        torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)
    finally:
        for name in names:
            sys.modules.pop(name, None)


@pytest.mark.parametrize(('with_yaml', 'zip_format'), [(True, True), (False, False)])
def test_loads_taming_lightning_checkpoint(vqgan_source, tmp_path, with_yaml, zip_format):
    """With and without model.yaml (else the config is read off the weights); torch's zip and legacy formats."""
    write_lightning_checkpoint(tmp_path / 'last.ckpt', vqgan_source.state_dict(), zip_format)
    assert 'pytorch_lightning' not in sys.modules
    if with_yaml:
        (tmp_path / 'model.yaml').write_text(TAMING_YAML.format(**TINY_CONFIG.to_json_dict()))
    model = load_vqgan(tmp_path)  # the directory form finds last.ckpt
    assert model.pixel_range == 'minus_one_one'
    assert model.config == TINY_CONFIG
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert_same_model(model, vqgan_source)


def torch_to_flax(state: dict[str, torch.Tensor], norm_as_4d: bool) -> dict:
    """vqgan-jax's documented conversion, written here independently of the loader.

    Drop `loss.*`; `word.digit` -> `word_digit`; 4-D `weight` -> `kernel` transposed
    (2, 3, 1, 0); norm `weight` -> `scale`; embedding `weight` -> `embedding`. Old flax kept
    GroupNorm params as (1, 1, 1, C), which `norm_as_4d` reproduces.
    """
    tree: dict = {}
    for key, tensor in state.items():
        if key.startswith('loss.'):
            continue
        *path, leaf = re.sub(r'(\w+)\.(\d+)', r'\1_\2', key).split('.')
        array = tensor.detach().numpy().astype(np.float32)
        if leaf == 'weight' and array.ndim == 4:
            leaf, array = 'kernel', array.transpose(2, 3, 1, 0)
        elif leaf == 'weight' and 'norm' in path[-1]:
            leaf = 'scale'
        elif leaf == 'weight' and path[-1] == 'embedding':
            leaf = 'embedding'
        if 'norm' in path[-1] and norm_as_4d:
            array = array.reshape(1, 1, 1, -1)
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = np.ascontiguousarray(array)
    return tree


VQGAN_JAX_CONFIG_EXTRAS = {
    'architectures': ['VQModel'],
    'model_type': 'vqgan',
    'double_z': False,
    'dropout': 0.0,
    'resamp_with_conv': True,
    'give_pre_end': False,
    'transformers_version': '4.9.0.dev0',
}


@pytest.mark.parametrize('variant', ['plain', 'norm_as_4d', 'chunked'])
def test_loads_vqgan_jax_flax_msgpack(vqgan_source, tmp_path, monkeypatch, variant):
    serialization = pytest.importorskip('flax.serialization')
    tree = torch_to_flax(vqgan_source.state_dict(), norm_as_4d=variant == 'norm_as_4d')
    assert tree['encoder']['down_0']['block_0']['conv1']['kernel'].shape == (3, 3, 32, 32)
    assert tree['quantize']['embedding']['embedding'].shape == (TINY_CONFIG.n_embed, TINY_CONFIG.embed_dim)
    assert 'block_1' in tree['decoder']['mid'] and 'attn_1' in tree['decoder']['mid']
    if variant == 'chunked':  # flax splits leaves over its chunk limit; make the codebook one of them
        monkeypatch.setattr(serialization, 'MAX_CHUNK_SIZE', 4096)
    (tmp_path / 'flax_model.msgpack').write_bytes(serialization.msgpack_serialize(tree))
    (tmp_path / 'config.json').write_text(json.dumps({**TINY_CONFIG.to_json_dict(), **VQGAN_JAX_CONFIG_EXTRAS}))
    model = load_vqgan(tmp_path / 'flax_model.msgpack')
    assert model.pixel_range == 'zero_one'  # dalle-mini's convention (see vqgan_checkpoint)
    assert model.config == TINY_CONFIG
    assert_same_model(model, vqgan_source)


def test_safetensors_round_trip(vqgan_source, tmp_path):
    source = VQGAN.random(TINY_CONFIG, seed=11)
    source.load_state_dict(vqgan_source.state_dict())
    source.pixel_range = 'zero_one'
    written = save_safetensors(source, tmp_path)  # a directory gets model.safetensors
    assert written == tmp_path / 'model.safetensors'
    model = load_vqgan(tmp_path)
    assert model.pixel_range == 'zero_one' and model.config == TINY_CONFIG
    assert_same_model(model, source)
    assert load_vqgan(written, pixel_range='minus_one_one').pixel_range == 'minus_one_one'


def test_directory_prefers_safetensors(vqgan_source, tmp_path):
    write_lightning_checkpoint(tmp_path / 'last.ckpt', {})  # would fail to load: no weights at all
    save_safetensors(vqgan_source, tmp_path / 'model.safetensors')
    assert_same_model(load_vqgan(tmp_path), vqgan_source)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.ckpt'):
        load_vqgan(tmp_path / 'nope.ckpt')
    with pytest.raises(FileNotFoundError, match='model.safetensors, flax_model.msgpack, last.ckpt'):
        load_vqgan(tmp_path)


def test_mismatched_weights_are_reported(vqgan_source, tmp_path):
    state = dict(vqgan_source.state_dict())
    del state['decoder.conv_out.bias']
    state['decoder.extra.weight'] = torch.zeros(1)
    with pytest.raises(ValueError, match=r'missing \(1\): decoder.conv_out.bias.*unexpected \(1\): decoder.extra'):
        vqgan_checkpoint.build_model(TINY_CONFIG, state, pixel_range='zero_one')


def test_tolerant_unpickler_runs_nothing(tmp_path):
    """A class the pickle names is never imported or called, even a dangerous one."""
    marker = tmp_path / 'pwned'

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    data = pickle.dumps({'x': Payload(), 'ok': [1, 2]})
    loaded = vqgan_checkpoint.TolerantUnpickler(__import__('io').BytesIO(data)).load()
    assert not marker.exists()
    assert loaded['ok'] == [1, 2] and 'pathlib' in repr(loaded['x'])


def test_taming_yaml_gives_the_published_config(tmp_path):
    (tmp_path / 'model.yaml').write_text(TAMING_YAML.format(**VQGAN_CONFIGS['f16_16384'].to_json_dict()))
    assert vqgan_checkpoint.taming_config_from_yaml(tmp_path / 'model.yaml') == VQGAN_CONFIGS['f16_16384']
