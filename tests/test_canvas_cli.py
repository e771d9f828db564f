"""`edalle zoom`, `pan`, `square`, `dream`, `upscale` and `--timelapse`: input errors before any model loads (worded as
the bot words them), and short end-to-end runs on the tiny models."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from edalle.cli import main
from edalle.config import VQGAN_CONFIGS
from edalle.expander import cli as expand_cli
from edalle.expander.default import DefaultSettings
from edalle.models.clip import ClipModel
from edalle.models.vqgan import VQGAN


@dataclass(frozen=True)
class _Quick(DefaultSettings):
    """Default settings with few views, so the runs stay quick on a CPU."""

    cutn: int = 2
    image_views: int = 2


def _no_models(*args: object) -> None:
    raise AssertionError('models must not load for an input error')


def _manifest(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(directory / 'candidate-1.png')
    candidate = {'rank': 1, 'file': 'candidate-1.png', 'seed': 4, 'score': 30.0, 'tokens': [[7] * 16] * 16}
    manifest = {'version': 1, 'prompt': 'a lighthouse in a storm', 'preset': 'tiny', 'candidates': [candidate]}
    (directory / 'manifest.json').write_text(json.dumps(manifest))
    return directory / 'manifest.json'


def _picture(path: Path, size: tuple[int, int]) -> Path:
    Image.new('RGB', size, (40, 90, 160)).save(path)
    return path


@pytest.mark.parametrize(
    ('argv', 'message'),
    [
        (['zoom', '{wide}', '--factor', '3'], 'invalid choice'),
        (['pan', '{square}'], 'required: --direction'),
        (['pan', '{wide}', '--direction', 'right', '--max-canvas-px', '1024'], 'largest allowed is 1024 px'),
        (['square', '{square}'], 'already square'),
        (['zoom', '{square}', '--timelapse', '{tmp}/t.mp4'], '--timelapse must end in .gif or .webp'),
        (['zoom', '{square}', '--steps', '0'], 'steps must be between'),
        (['dream', 'a fox', '--ratio', '4:1'], 'from 1:3'),
        (['dream', '   '], 'starts from words'),
        (['dream', 'a fox', '--no', 'text'], None),  # fine: fails only at loading (the test's models refuse)
        (['dream', 'a fox', '--refine', '{square}', '--ratio', '2:1'], 'keeps its shape'),
        (['expand', '{square}', '--timelapse', '{tmp}/t.gif', '--method', 'classic'], 'keeps no frames'),
        (['upscale', '{wide}', '--max-pixels', '65536'], 'largest I upscale here is 65,536 pixels'),
        (['upscale', '{tmp}/none.png'], 'No picture file'),
    ],
)
def test_input_errors_before_models_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], message: str | None
) -> None:
    monkeypatch.setattr(expand_cli, 'load_models', _no_models)
    names = {
        'wide': str(_picture(tmp_path / 'wide.png', (1024, 256))),
        'square': str(_picture(tmp_path / 'sq.png', (256, 256))),
    }
    names['tmp'] = str(tmp_path)
    args = [arg.format(**names) for arg in argv] + ['--out', str(tmp_path / 'out.png')]
    if message is None:
        with pytest.raises(AssertionError, match='models must not load'):
            main(args)
        return
    assert main(args) == 2  # argparse's usage errors too: `main` turns them into the exit status
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err


@pytest.mark.slow  # three short runs of the tiny models
def test_zoom_pan_and_dream_end_to_end_with_time_lapses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    models = (VQGAN.random(VQGAN_CONFIGS['tiny'], 0), ClipModel.build_tiny(0))
    monkeypatch.setattr(expand_cli, 'load_models', lambda preset, data_dir: models)
    import edalle.expander.api as api

    monkeypatch.setattr(api, 'DefaultSettings', _Quick)
    manifest = _manifest(tmp_path / 'job')
    zoomed, film = tmp_path / 'zoomed.png', tmp_path / 'zoom.webp'
    argv = ['zoom', str(manifest), '--factor', '1.5', '--steps', '2', '--seed', '3', '--preset', 'tiny']
    assert main([*argv, '--out', str(zoomed), '--timelapse', str(film)]) == 0
    with Image.open(zoomed) as image:
        assert image.size == (384, 384)
        original = np.asarray(Image.open(manifest.parent / 'candidate-1.png').convert('RGB'))
        assert np.array_equal(np.asarray(image.convert('RGB'))[64:320, 64:320], original)
    with Image.open(film) as animation:  # lossy WebP may fold frames that differ too little into one
        assert animation.format == 'WEBP' and animation.size == (384, 384)
    out = capsys.readouterr().out
    assert '384×384 (zoom 1.5x' in out and 'time-lapse' in out

    panned = tmp_path / 'panned.png'
    assert main(['pan', str(zoomed), '--direction', 'down', '--steps', '1', '--preset', 'tiny', '--out', str(panned)]) == 0
    with Image.open(panned) as image:
        assert image.size == (384, 576)

    dreamed, film = tmp_path / 'dream.png', tmp_path / 'dream.gif'
    argv = ['dream', 'a red fox', '--ratio', '2:1', '--steps', '2', '--seed', '5', '--init', 'grey', '--no', 'text']
    assert main([*argv, '--preset', 'tiny', '--out', str(dreamed), '--timelapse', str(film)]) == 0
    with Image.open(dreamed) as image:
        assert image.size == (512, 256)
    with Image.open(io.BytesIO(film.read_bytes())) as animation:  # from grey: the first frame is not the last
        assert animation.format == 'GIF' and 2 <= sum(1 for _ in ImageSequence.Iterator(animation)) <= 3


@pytest.mark.slow  # generates the tiny preset's files the first time
def test_upscale_a_picture_file_at_its_own_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _picture(tmp_path / 'odd.png', (40, 24))  # not whole tokens, not square: kept as it is
    out = tmp_path / 'big.png'
    assert main(['--data-dir', str(tmp_path / 'data'), 'upscale', str(source), '--preset', 'tiny', '--out', str(out)]) == 0
    with Image.open(out) as image:
        assert image.size == (160, 96)
    assert '160×96 (×4 of 40×24' in capsys.readouterr().out
