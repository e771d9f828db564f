"""Model files: the missing-weights message, importing by hand, hash verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edalle.presets import PRESETS, get_preset
from edalle.weights import MissingWeights, import_dir, models_dir, read_manifest, require, verify


def test_missing_weights_name_every_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MissingWeights) as caught:
        require(PRESETS['mini'], tmp_path)
    message = str(caught.value)
    assert 'dalle-mini/flax_model.msgpack' in message and 'vqgan_imagenet_f16_16384/flax_model.msgpack' in message
    assert 'edalle models download --preset mini' in message and 'edalle models import DIR --preset mini' in message
    assert len(caught.value.missing) == 7


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match='mini, mega, tiny'):
        get_preset('huge')


def hand_brought(root: Path) -> Path:
    """A directory laid out the way someone copies hub snapshots by hand (names differ)."""
    dalle = root / 'snapshot-a'
    dalle.mkdir(parents=True)
    (dalle / 'config.json').write_text(json.dumps({'d_model': 1024, 'image_vocab_size': 16384}))
    for name in ('flax_model.msgpack', 'vocab.json', 'merges.txt'):
        (dalle / name).write_bytes(b'dalle ' + name.encode())
    vqgan = root / 'nested' / 'snapshot-b'
    vqgan.mkdir(parents=True)
    (vqgan / 'config.json').write_text(json.dumps({'ch_mult': [1, 1, 2, 2, 4]}))
    (vqgan / 'flax_model.msgpack').write_bytes(b'vqgan weights')
    clip = root / 'clip'
    clip.mkdir()
    (clip / 'open_clip_model.safetensors').write_bytes(b'clip weights')
    (root / 'unrelated').mkdir()
    (root / 'unrelated' / 'config.json').write_text('{"something": 1}')
    return root


def test_import_classifies_directories_by_their_config(tmp_path: Path) -> None:
    source = hand_brought(tmp_path / 'usb')
    seen: list[tuple[str, int, int]] = []
    report = import_dir(source, 'mini', tmp_path / 'data', progress=lambda *event: seen.append(event))
    assert report.missing == []
    assert ('copy open_clip_model.safetensors', 12, 12) in seen and len(seen) == 7  # one event per small file
    root = models_dir(tmp_path / 'data')
    assert not [p.name for p in root.rglob('*') if p.name.endswith('.incomplete')]  # copies land under their names
    assert (root / 'dalle-mini' / 'flax_model.msgpack').read_bytes() == b'dalle flax_model.msgpack'
    assert (root / 'vqgan_imagenet_f16_16384' / 'flax_model.msgpack').read_bytes() == b'vqgan weights'
    assert (root / 'clip-vit-b-32-openai' / 'open_clip_model.safetensors').is_file()
    assert set(read_manifest(root / 'dalle-mini')) == {'config.json', 'flax_model.msgpack', 'vocab.json', 'merges.txt'}


def test_import_reports_what_is_still_missing(tmp_path: Path) -> None:
    source = hand_brought(tmp_path / 'usb')
    (source / 'clip' / 'open_clip_model.safetensors').unlink()
    report = import_dir(source, 'mini', tmp_path / 'data')
    assert [p.name for p in report.missing] == ['open_clip_model.safetensors']
    with pytest.raises(FileNotFoundError):
        import_dir(tmp_path / 'nowhere', 'mini', tmp_path / 'data')


def test_verify_detects_a_changed_file(tmp_path: Path) -> None:
    import_dir(hand_brought(tmp_path / 'usb'), 'mini', tmp_path / 'data')
    seen: list[tuple[str, int, int]] = []
    checks = verify('mini', tmp_path / 'data', check_shapes=False, progress=lambda *event: seen.append(event))
    assert all(c.ok for c in checks) and len(checks) == 7
    assert ('hash flax_model.msgpack', 13, 13) in seen  # the VQGAN's, 13 bytes
    target = models_dir(tmp_path / 'data') / 'dalle-mini' / 'vocab.json'
    target.write_bytes(b'truncated')
    bad = [c for c in verify('mini', tmp_path / 'data', check_shapes=False) if not c.ok]
    assert [c.path for c in bad] == [target] and 'hash differs' in bad[0].detail
    target.unlink()
    assert [c.detail for c in verify('mini', tmp_path / 'data', check_shapes=False) if not c.ok] == ['missing']


def test_tiny_preset_is_generated_identically_and_verifies(tmp_path: Path) -> None:
    from edalle.weights import ensure_tiny, sha256_of

    ensure_tiny(tmp_path / 'a')
    ensure_tiny(tmp_path / 'b')
    files = PRESETS['tiny'].missing_files(models_dir(tmp_path / 'nowhere'))  # every required path, relative layout
    names = [p.relative_to(models_dir(tmp_path / 'nowhere')) for p in files]
    assert len(names) == 7  # tokenizer and DalleBart (4), VQGAN, CLIP, the ×4 upscaler
    for name in names:
        assert sha256_of(models_dir(tmp_path / 'a') / name) == sha256_of(models_dir(tmp_path / 'b') / name), name
    loading: list[tuple[str, int, int]] = []
    checks = verify('tiny', tmp_path / 'a', progress=lambda *event: loading.append(event))
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert loading == [('load', done, 4) for done in range(5)]  # DalleBart, VQGAN, CLIP, the upscaler
    assert sum('shapes match' in c.detail for c in checks) == 3
    assert [c.detail for c in checks if c.path.name == 'upscale'] == ['spandrel loads it as a ×4 ESRGAN network']


def test_verify_reports_weights_that_do_not_load(tmp_path: Path) -> None:
    from edalle.weights import ensure_tiny

    ensure_tiny(tmp_path)
    weights = models_dir(tmp_path) / 'tiny' / 'dalle' / 'flax_model.msgpack'
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    bad = [c for c in verify('tiny', tmp_path) if not c.ok]
    assert [c.path.name for c in bad] == ['dalle'] and 'does not load' in bad[0].detail
