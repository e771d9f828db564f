"""`edalle expand`: input errors before any model loads, and one tiny end-to-end run."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edalle.cli import main
from edalle.config import VQGAN_CONFIGS
from edalle.expander import cli as expand_cli
from edalle.expander.api import ExpandRequest, prepare
from edalle.expander.default import DefaultSettings
from edalle.expander.errors import ExpandError
from edalle.models.clip import ClipModel
from edalle.models.vqgan import VQGAN


@dataclass(frozen=True)
class _Quick(DefaultSettings):
    """Default settings with few views, so the end-to-end run stays quick on a CPU."""

    cutn: int = 2
    image_views: int = 2


def _manifest(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', (256, 256), (1, 2, 3)).save(directory / 'candidate-1.png')
    candidate = {'rank': 1, 'file': 'candidate-1.png', 'seed': 4, 'score': 30.0, 'tokens': [[7] * 16] * 16}
    manifest = {'version': 1, 'prompt': 'a lighthouse in a storm', 'preset': 'tiny', 'candidates': [candidate]}
    (directory / 'manifest.json').write_text(json.dumps(manifest))
    return directory / 'manifest.json'


def _no_models(*args: object) -> None:
    raise AssertionError('models must not load for an input error')


@pytest.mark.parametrize(
    ('argv', 'message'),
    [
        (['--ratio', '16:9 (taller)'], 'width:height'),
        (['--ratio', '1:1'], 'too close'),
        (['--ratio', '5:1'], 'between 1:3'),
        (['--steps', '0'], 'steps must be between'),
        (['--seed', '-1'], 'seed must be'),
        (['--out', 'result.gif'], '--out must end'),
        (['--preset', 'huge'], "invalid choice: 'huge'"),
    ],
)
def test_input_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv, message
) -> None:
    monkeypatch.setattr(expand_cli, 'load_models', _no_models)
    source = tmp_path / 'in.png'
    Image.new('RGB', (300, 300)).save(source)
    args = ['expand', str(source), '--out', str(tmp_path / 'out.png'), *argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err


def test_bad_source_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(expand_cli, 'load_models', _no_models)
    junk = tmp_path / 'junk.png'
    junk.write_bytes(b'not a png at all')
    assert main(['expand', str(junk), '--out', str(tmp_path / 'o.png')]) == 2
    assert 'not a picture' in capsys.readouterr().err
    assert main(['expand', str(tmp_path / 'missing.webp'), '--out', str(tmp_path / 'o.png')]) == 2
    assert 'No picture file' in capsys.readouterr().err


def test_request_validation() -> None:
    image = Image.new('RGB', (256, 256))
    with pytest.raises(ExpandError, match='method'):
        prepare(ExpandRequest(image, method='fancy'))
    with pytest.raises(ExpandError, match='16×16'):
        prepare(ExpandRequest(image, source_tokens=np.zeros((8, 8), np.int64)))
    with pytest.raises(ExpandError, match='another model'):
        prepare(ExpandRequest(image, source_tokens=np.full((16, 16), 5000)), codebook_size=1024)
    with pytest.raises(ExpandError, match='cutouts'):
        prepare(ExpandRequest(image, cutouts=1000))
    chosen = prepare(ExpandRequest(image, method='classic'))
    assert chosen.settings.steps == 200 and chosen.settings.cutn == 64 and 0 <= chosen.seed < 2**31


def test_expand_a_manifest_candidate_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    models = (VQGAN.random(VQGAN_CONFIGS['tiny'], 0), ClipModel.build_tiny(0))
    monkeypatch.setattr(expand_cli, 'load_models', lambda preset, data_dir, progress=None: models)
    import edalle.expander.api as api

    monkeypatch.setattr(api, 'DefaultSettings', _Quick)
    seen: list[ExpandRequest] = []
    original = api.expand

    def spy(vqgan, clip, request, progress=None, should_cancel=None):  # type: ignore[no-untyped-def]
        seen.append(request)
        return original(vqgan, clip, request, progress, should_cancel)

    monkeypatch.setattr(api, 'expand', spy)
    manifest = _manifest(tmp_path / 'job')
    out = tmp_path / 'wide.png'
    argv = ['expand', str(manifest), '--ratio', '2:1', '--steps', '1', '--seed', '3', '--preset', 'tiny', '--out', str(out)]
    assert main(argv) == 0
    assert seen[0].prompt == 'a lighthouse in a storm'  # the job's prompt by default
    assert seen[0].source_tokens is not None
    with Image.open(out) as image:
        assert image.size == (512, 256)
        assert np.array_equal(np.asarray(image.convert('RGB'))[:, 128:384], np.full((256, 256, 3), (1, 2, 3)))
    assert '512×256' in capsys.readouterr().out


def test_without_out_the_picture_is_named_after_its_source_and_ratio() -> None:
    """Like `imagine`'s folders: `out/<time>-<source>-<ratio>.png`, never overwriting an earlier run."""
    from_manifest = expand_cli.default_out(Path('out/20240101-000000-a-fox/manifest.json'), '16:9').as_posix()
    assert re.fullmatch(r'out/\d{8}-\d{6}-20240101-000000-a-fox-16x9\.png', from_manifest), from_manifest
    from_picture = expand_cli.default_out(Path('photos/beach.jpg'), '9x16').as_posix()
    assert re.fullmatch(r'out/\d{8}-\d{6}-beach-9x16\.png', from_picture), from_picture
