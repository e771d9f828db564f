"""DalleBart: published parameter layout, parity with min-dalle's torch modules, checkpoint files.

The oracle is min-dalle 0.4.11 (an independent implementation that loads the same published
weights): its `DalleBartEncoder`/`DalleBartDecoder` are built directly with our random
weights mapped in, so nothing is downloaded. Its sampler is not compared (different start
token and super-conditioning formula); the modules are.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bart_weights import perturbed_params
from flax.serialization import msgpack_serialize
from flax.traverse_util import flatten_dict, unflatten_dict

from edalle.config import BART_CONFIGS
from edalle.models.bart import encode, teacher_forced_logits
from edalle.models.bart_checkpoint import (
    CheckpointMismatch,
    load_config,
    load_params,
    read_params,
    save_params,
    unstack_layers,
)
from edalle.models.sampling import prepare_sampler

CONFIG = BART_CONFIGS['tiny']  # 2 + 2 layers, d 64, 4 heads, GLU 96: the full structure at toy size
TOKEN_COUNT = 24  # decoder tokens compared under teacher forcing


@pytest.fixture(scope='module')
def params() -> dict:
    return perturbed_params(CONFIG, seed=0)


@pytest.fixture(scope='module')
def inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    text_ids = np.full((2, CONFIG.max_text_length), CONFIG.pad_token_id, np.int64)
    text_ids[0, :9] = [0, *rng.integers(3, CONFIG.encoder_vocab_size, 7), 2]
    text_ids[1, :2] = [0, 2]  # the unconditional prompt: <s></s> then padding
    image_ids = rng.integers(0, CONFIG.image_vocab_size, (1, TOKEN_COUNT))
    image_ids[0, 0] = CONFIG.decoder_start_token_id
    return text_ids, (text_ids != CONFIG.pad_token_id), image_ids


def test_layout_is_published(params):
    shapes = {'/'.join(k): v.shape for k, v in flatten_dict(params).items()}
    d, f, layers = CONFIG.d_model, CONFIG.decoder_ffn_dim, CONFIG.decoder_layers
    dec = 'model/decoder/layers/FlaxBartDecoderLayers'
    assert shapes['lm_head/kernel'] == (d, CONFIG.image_vocab_size + 1)
    assert shapes['model/decoder/embed_tokens/embedding'] == (CONFIG.image_vocab_size + 1, d)
    assert shapes['model/encoder/embed_positions/embedding'] == (CONFIG.max_text_length, d)
    assert shapes['model/decoder/embed_positions/embedding'] == (CONFIG.image_length, d)
    assert shapes[f'{dec}/FlaxBartAttention_1/k_proj/kernel'] == (layers, d, d)
    assert shapes[f'{dec}/GLU_0/Dense_0/kernel'] == (layers, d, f)  # kernels are (in, out)
    assert shapes[f'{dec}/GLU_0/Dense_2/kernel'] == (layers, f, d)
    assert shapes[f'{dec}/GLU_0/LayerNorm_1/bias'] == (layers, f)
    scale_less = ['LayerNorm_0', 'LayerNorm_2', 'GLU_0/LayerNorm_0', 'GLU_0/LayerNorm_1']
    for name in scale_less:
        assert f'{dec}/{name}/bias' in shapes and f'{dec}/{name}/scale' not in shapes
    assert f'{dec}/LayerNorm_3/scale' in shapes
    assert 'model/encoder/final_ln/scale' not in shapes and 'model/decoder/final_ln/bias' in shapes
    assert not any(k.endswith('proj/bias') or 'Dense_0/bias' in k for k in shapes)
    assert len(shapes) == 17 + 25  # encoder 17 leaves, decoder + lm_head 25 (counted from the published tree)


def torch_state(params: dict, codec: str, is_swapped_qk: bool = False, is_untransposed_q: bool = False) -> dict:
    """Our Flax tree → min-dalle's state_dict for one codec (the test's own weight mapping)."""
    torch = pytest.importorskip('torch')
    names = {
        'LayerNorm_0': 'pre_self_attn_layer_norm',
        'LayerNorm_1': 'self_attn_layer_norm',
        'FlaxBartAttention_0': 'self_attn',
        'LayerNorm_2': 'pre_encoder_attn_layer_norm',
        'LayerNorm_3': 'encoder_attn_layer_norm',
        'FlaxBartAttention_1': 'encoder_attn',
        'GLU_0': 'glu',
        'Dense_0': 'fc0',
        'Dense_1': 'fc1',
        'Dense_2': 'fc2',
    }
    suffixes = {'kernel': 'weight', 'embedding': 'weight', 'scale': 'weight', 'bias': 'bias'}
    state: dict[str, np.ndarray] = {}
    for path, leaf in flatten_dict(params['model'][codec]).items():
        leaf = np.asarray(leaf)
        if path[-1] == 'kernel':
            leaf = np.swapaxes(leaf, -1, -2)  # (in, out) → torch (out, in)
        if path[0] == 'layers':
            inner = path[2:-1]
            if inner[0] == 'GLU_0':  # inside the GLU, LayerNorm_{i} is min-dalle's ln{i}
                inner = ('GLU_0', inner[1].replace('LayerNorm_', 'ln'))
            module = '.'.join(names.get(p, p) for p in inner)
            for i in range(leaf.shape[0]):
                state[f'layers.{i}.{module}.{suffixes[path[-1]]}'] = leaf[i]
        else:
            state[f'{path[0]}.{suffixes[path[-1]]}'] = leaf
    for key in [k for k in state if k.endswith('.bias')]:  # the scale-less LNs: torch's weight stays 1
        state.setdefault(key.removesuffix('bias') + 'weight', np.ones_like(state[key]))
    if codec == 'decoder':
        state['lm_head.weight'] = np.asarray(params['lm_head']['kernel']).T
    if is_swapped_qk:
        for key in [k for k in state if '.q_proj.' in k]:
            other = key.replace('.q_proj.', '.k_proj.')
            state[key], state[other] = state[other], state[key]
    if is_untransposed_q:
        state['layers.0.self_attn.q_proj.weight'] = state['layers.0.self_attn.q_proj.weight'].T
    return {k: torch.tensor(np.ascontiguousarray(v)) for k, v in state.items()}


def min_dalle_outputs(params: dict, text_ids, text_mask, image_ids, **mistakes) -> tuple[np.ndarray, np.ndarray]:
    torch = pytest.importorskip('torch')
    models = pytest.importorskip('min_dalle.models')
    c = CONFIG
    encoder = models.DalleBartEncoder(
        layer_count=c.encoder_layers,
        embed_count=c.d_model,
        attention_head_count=c.encoder_attention_heads,
        text_vocab_count=c.encoder_vocab_size,
        text_token_count=c.max_text_length,
        glu_embed_count=c.encoder_ffn_dim,
        device='cpu',
    )
    decoder = models.DalleBartDecoder(
        image_vocab_count=c.image_vocab_size,
        embed_count=c.d_model,
        attention_head_count=c.decoder_attention_heads,
        glu_embed_count=c.decoder_ffn_dim,
        layer_count=c.decoder_layers,
        device='cpu',
    )
    encoder.load_state_dict(torch_state(params, 'encoder', **mistakes), strict=True)
    decoder.load_state_dict(torch_state(params, 'decoder', **mistakes), strict=True)
    with torch.no_grad():
        encoder_state = encoder(torch.tensor(text_ids))  # min-dalle's encoder takes exactly 2 rows
        token_count = image_ids.shape[1]
        attention_state = torch.zeros(c.decoder_layers, 4, c.image_length, c.d_model)
        logits, _ = decoder(
            attention_mask=torch.tensor(text_mask)[:, None, None, :],
            encoder_state=encoder_state,
            attention_state=attention_state,
            prev_tokens=torch.tensor(image_ids),  # repeated over both rows by min-dalle
            token_index=torch.arange(token_count),
        )
    return encoder_state.numpy(), logits.numpy()


@pytest.fixture(scope='module')
def ours(params, inputs) -> tuple[np.ndarray, np.ndarray]:
    """Our encoder output (2, 64, D) and teacher-forced logits (2, T, V + 1)."""
    text_ids, text_mask, image_ids = inputs
    encoder_state = encode(params, CONFIG, jnp.asarray(text_ids, jnp.int32), jnp.asarray(text_mask))
    image_ids = jnp.asarray(np.repeat(image_ids, 2, axis=0), jnp.int32)
    logits = teacher_forced_logits(params, CONFIG, encoder_state, jnp.asarray(text_mask), image_ids)
    return np.asarray(encoder_state), np.asarray(logits)


def test_parity_with_min_dalle(params, inputs, ours):
    theirs = min_dalle_outputs(params, *inputs)
    assert ours[1].shape == theirs[1].shape == (2, TOKEN_COUNT, CONFIG.image_vocab_size + 1)
    assert ours[1].std() > 0.5  # logits are far from degenerate
    np.testing.assert_allclose(ours[0], theirs[0], rtol=0, atol=2e-5)  # measured: 2e-6
    np.testing.assert_allclose(ours[1], theirs[1], rtol=0, atol=2e-5)


@pytest.mark.parametrize('mistake', ['is_swapped_qk', 'is_untransposed_q'])
def test_parity_catches_a_wrong_mapping(params, inputs, ours, mistake):
    theirs = min_dalle_outputs(params, *inputs, **{mistake: True})
    assert np.abs(ours[0] - theirs[0]).max() > 1e-2
    assert np.abs(ours[1] - theirs[1]).max() > 1e-2


def assert_same_tree(a: dict, b: dict) -> None:
    fa, fb = flatten_dict(a), flatten_dict(b)
    assert fa.keys() == fb.keys()
    for key in fa:
        assert np.asarray(fa[key]).dtype == np.asarray(fb[key]).dtype, key
        np.testing.assert_array_equal(np.asarray(fa[key]), np.asarray(fb[key]), err_msg='/'.join(key))


def test_scanned_and_unscanned_files_load_alike(params, tmp_path):
    save_params(params, tmp_path / 'scanned.msgpack')
    save_params(params, tmp_path / 'unscanned.msgpack', scanned=False)
    # the other unscanned spelling: `layers/0`, `layers/1`, …
    bare = unstack_layers(jax.tree.map(np.asarray, params))
    for codec, title in (('encoder', 'Encoder'), ('decoder', 'Decoder')):
        layers = bare['model'][codec]['layers']
        bare['model'][codec]['layers'] = {k.removeprefix(f'FlaxBart{title}Layer_'): v for k, v in layers.items()}
    (tmp_path / 'bare.msgpack').write_bytes(msgpack_serialize(bare))

    unscanned_keys = flatten_dict(unstack_layers(jax.tree.map(np.asarray, params)), sep='/')
    assert 'model/decoder/layers/FlaxBartDecoderLayer_1/GLU_0/Dense_2/kernel' in unscanned_keys
    for name in ('scanned', 'unscanned', 'bare'):
        assert_same_tree(load_params(tmp_path / f'{name}.msgpack', CONFIG), params)


def test_fp16_file_loads_and_casts(params, tmp_path):
    half = jax.tree.map(lambda x: np.asarray(x, np.float16), params)
    save_params(half, tmp_path / 'fp16.msgpack')
    assert_same_tree(load_params(tmp_path / 'fp16.msgpack', CONFIG), half)
    as_float32 = load_params(tmp_path / 'fp16.msgpack', CONFIG, dtype=jnp.float32)
    assert_same_tree(as_float32, jax.tree.map(lambda x: x.astype(np.float32), half))


def test_unscanned_layers_that_differ_name_the_leaf(params, tmp_path):
    tree = unstack_layers(jax.tree.map(np.asarray, params))
    del tree['model']['decoder']['layers']['FlaxBartDecoderLayer_1']['GLU_0']['Dense_2']
    save_params(tree, tmp_path / 'holed.msgpack')
    with pytest.raises(CheckpointMismatch, match='model/decoder/layers: GLU_0/Dense_2/kernel is missing from some layers'):
        read_params(tmp_path / 'holed.msgpack', CONFIG)


@pytest.mark.parametrize('stored', [np.float32, np.float16])
def test_prepare_with_release_gives_the_same_weights_and_keeps_no_second_copy(params, tmp_path, stored):
    """What Engine.load does (host arrays in, `release`) equals preparing a loaded tree, and empties the tree."""
    save_params(jax.tree.map(lambda x: np.asarray(x, stored), params), tmp_path / 'model.msgpack')
    expected = prepare_sampler(load_params(tmp_path / 'model.msgpack', CONFIG), CONFIG, jnp.float32)
    host = read_params(tmp_path / 'model.msgpack', CONFIG)
    assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree.leaves(host))
    prepared = prepare_sampler(host, CONFIG, jnp.float32, release=True)
    assert host == {'model': {}}  # every host array was handed over as its device copy was made
    assert jax.tree.structure(prepared) == jax.tree.structure(expected)
    for ours, theirs in zip(jax.tree.leaves(prepared), jax.tree.leaves(expected), strict=True):
        assert isinstance(ours, jax.Array) and ours.dtype == theirs.dtype
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert prepared.encoder['model']['encoder']['embed_tokens']['embedding'].dtype == stored  # stored dtype kept


def test_mismatch_names_the_key(params, tmp_path):
    save_params(params, tmp_path / 'model.msgpack')
    bigger = dataclasses.replace(CONFIG, encoder_vocab_size=1000)
    with pytest.raises(CheckpointMismatch, match=r'model/encoder/embed_tokens/embedding: shape \(512, 64\)'):
        load_params(tmp_path / 'model.msgpack', bigger)
    flat = flatten_dict(jax.tree.map(np.asarray, params), sep='/')
    del flat['model/encoder/final_ln/bias']
    (tmp_path / 'missing.msgpack').write_bytes(msgpack_serialize(unflatten_dict(flat, sep='/')))
    with pytest.raises(CheckpointMismatch, match='model/encoder/final_ln/bias: missing'):
        load_params(tmp_path / 'missing.msgpack', CONFIG)


def test_load_config_reads_published_keys(tmp_path):
    published = {'d_model': 64, 'encoder_layers': 2, 'decoder_layers': 2, 'image_vocab_size': 1024, 'use_glu': True}
    published |= {'encoder_attention_heads': 4, 'decoder_attention_heads': 4, 'ln_positions': 'normformer'}
    (tmp_path / 'config.json').write_text(json.dumps(published))
    config = load_config(tmp_path)
    assert config.d_model == 64 and config.decoder_start_token_id == 1024


def test_half_precision_params_and_compute(params, inputs, ours):
    """mega-1-fp16 on a GPU: float16 params as loaded, bfloat16 compute, close to float32."""
    text_ids, text_mask, image_ids = inputs
    half = jax.tree.map(lambda x: jnp.asarray(x, jnp.float16), params)
    encoder_state = encode(half, CONFIG, jnp.asarray(text_ids, jnp.int32), jnp.asarray(text_mask), jnp.bfloat16)
    image_ids = jnp.asarray(np.repeat(image_ids, 2, axis=0), jnp.int32)
    logits = teacher_forced_logits(half, CONFIG, encoder_state, jnp.asarray(text_mask), image_ids, jnp.bfloat16)
    assert encoder_state.dtype == logits.dtype == jnp.bfloat16
    error = np.abs(np.asarray(logits, np.float32) - ours[1])
    assert error.mean() < 0.03 * np.abs(ours[1]).mean() and error.max() < 0.2  # measured: 1%, 0.04
