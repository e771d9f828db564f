"""The command line: clear one-line errors for what a user can fix, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edalle.cli import main


def run_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, '-m', 'edalle.cli', '--data-dir', str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ('args', 'message'),
    [
        (['imagine', '   '], 'The prompt is empty'),
        (['imagine', 'a cat', '-n', '100'], 'between 1 and 16'),
        (['imagine', 'a cat', '-n', '0'], 'between 1 and 16'),
        (['imagine', 'a cat', '--seed', '-5'], 'The seed must be'),
        (['imagine', 'a cat', '--preset', 'huge'], "invalid choice: 'huge'"),
    ],
)
def test_bad_imagine_input_is_one_clear_line(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    assert main(['--data-dir', str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert 'error: ' in err and message in err and 'Traceback' not in err


def test_missing_weights_offline_name_the_files_and_the_fix(tmp_path: Path) -> None:
    done = run_cli('imagine', 'a lighthouse in a storm', '--preset', 'mini', data_dir=tmp_path)
    assert done.returncode == 2
    assert 'Traceback' not in done.stderr
    assert 'dalle-mini/flax_model.msgpack' in done.stderr and 'edalle models download --preset mini' in done.stderr


def test_models_list_and_verify_without_files(tmp_path: Path, capsys) -> None:
    assert main(['--data-dir', str(tmp_path), 'models', 'list']) == 0
    out = capsys.readouterr().out
    assert 'mini' in out and '7 file(s) missing' in out and 'generated on first use' in out
    assert any(line.startswith('upscale ') and '1 file(s) missing' in line for line in out.splitlines())  # the add-on
    assert main(['--data-dir', str(tmp_path), 'models', 'verify', '--preset', 'mega', '--quick']) == 1
    assert 'FAIL' in capsys.readouterr().out


@pytest.fixture
def pictures(tmp_path: Path) -> dict[str, Path]:
    from PIL import Image

    paths = {'square': tmp_path / 'square.png', 'wide': tmp_path / 'wide.png'}
    Image.new('RGB', (256, 256), (200, 30, 30)).save(paths['square'])
    Image.new('RGB', (448, 256), (30, 30, 200)).save(paths['wide'])
    return paths


@pytest.mark.parametrize(
    ('args', 'message'),
    [
        (['vary', 'nowhere/manifest.json', '--out', 'out'], 'No imagine manifest'),
        (['repaint', '{square}', '--region', 'A1:D4', '--prompt', 'a hat', '--out', 'x.png'], 'the whole picture'),
        (['repaint', '{square}', '--region', 'B2', '--prompt', ' ', '--out', 'x.png'], 'what the region should show'),
        (['repaint', '{wide}', '--region', 'B2', '--prompt', 'a hat', '--out', 'x.png'], 'needs a 256×256 picture'),
        (
            ['repaint', '{wide}', '--region', 'H1', '--prompt', 'a hat', '--method', 'clip', '--out', 'x.png'],
            'columns A to G',
        ),
        (['repaint', '{square}', '--region', 'B2', '--prompt', 'a hat', '--out', 'x.gif'], '--out must be a file'),
        (['repaint', '{square}', '--region', 'B2', '--prompt', 'a hat', '--out', 'x.png', '--timelapse', 't.gif'], 'clip'),
    ],
)
def test_bad_vary_and_repaint_input_is_one_clear_line_before_any_model_loads(
    tmp_path: Path, capsys, pictures: dict[str, Path], args: list[str], message: str
) -> None:
    args = [a.format(**{k: str(v) for k, v in pictures.items()}) for a in args]
    assert main(['--data-dir', str(tmp_path / 'empty'), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and 'Traceback' not in err
    assert not (tmp_path / 'empty').exists()  # refused before loading (or generating) any model


@pytest.mark.slow
def test_cli_vary_then_repaint_by_tokens_and_by_clip(tmp_path: Path, capsys, tiny_engine: Any) -> None:
    import json

    import numpy as np
    from PIL import Image

    from edalle.expander.canvas import canvas_for_region
    from edalle.expander.seams import region_alpha
    from edalle.operations.imagine import ImagineRequest, write_result

    (grid,) = tiny_engine.imagine([ImagineRequest('a lighthouse', n=2, seed=9)])
    write_result(grid, tmp_path / 'grid', extra={'preset': 'tiny'})
    data = ['--data-dir', str(tiny_engine.data_dir)]
    out = tmp_path / 'varied'
    vary = ['vary', str(tmp_path / 'grid'), '--index', '2', '--strength', 'strong', '-n', '2', '--seed', '4']
    assert main([*data, *vary, '--preset', 'tiny', '--out', str(out)]) == 0
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['kind'] == 'vary' and manifest['strength'] == 'strong' and manifest['prompt'] == 'a lighthouse'
    assert all(np.array_equal(np.asarray(c['tokens'])[:4], grid.candidates[1].tokens[:4]) for c in manifest['candidates'])
    assert '2 variations (strong)' in capsys.readouterr().out

    source = Image.open(out / 'candidate-1.png').convert('RGB')
    beyond = (region_alpha(canvas_for_region((256, 256), 'B2')) == 0).numpy()
    for method in ('tokens', 'clip'):
        painted = tmp_path / f'{method}.png'
        repaint = ['repaint', str(out), '--region', 'B2', '--prompt', 'a red boat', '--method', method, '--steps', '2']
        recorded = ['--timelapse', str(tmp_path / 'clip.gif')] if method == 'clip' else []
        assert main([*data, *repaint, *recorded, '--preset', 'tiny', '--seed', '2', '--out', str(painted)]) == 0
        result = np.asarray(Image.open(painted).convert('RGB'))
        assert result.shape == (256, 256, 3) and np.array_equal(result[beyond], np.asarray(source)[beyond])
        assert f'B2 repainted by {method}' in capsys.readouterr().out
    with Image.open(tmp_path / 'clip.gif') as animation:  # a frame every step of the two, and the final picture
        assert animation.n_frames >= 2 and animation.is_animated
