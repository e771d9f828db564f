"""The command line: clear one-line errors for what a user can fix, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    assert main(['--data-dir', str(tmp_path), 'models', 'verify', '--preset', 'mega', '--quick']) == 1
    assert 'FAIL' in capsys.readouterr().out
