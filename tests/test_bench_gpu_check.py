"""The device check runs end to end on the CPU with the tiny models, so it is ready the day a GPU is lent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'bench' / 'gpu_check.sh'


@pytest.mark.slow
def test_gpu_check_on_the_cpu_writes_every_steps_figures_to_out(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    env = {**os.environ, 'OUT': str(out), 'PYTHON': sys.executable}
    done = subprocess.run(
        ['bash', str(SCRIPT), '--device', 'cpu', '--preset', 'tiny'],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,  # the script finds the repository from its own path
    )
    summary = (out / 'summary.txt').read_text()
    assert done.returncode == 0, summary + done.stderr[-3000:]
    assert 'RESULT: every step ok' in summary
    assert 'cpu: ' in summary and 'cpu flags' in summary  # no nvidia-smi here: the CPU names the machine
    for step in ('tests_gpu', 'generation_mini', 'generation_mega', 'operations'):
        assert f'## {step}: ok' in summary
    # the figures of each step, copied from its log
    assert 'skipped' in summary or 'passed' in summary  # the gpu-marked tests skip without CUDA
    assert summary.count('one candidate, edalle / min-dalle:') == 2
    assert summary.count('peak RSS, edalle / min-dalle (ranking off):') == 2
    assert summary.count('3x3 grid with ranking:') == 2
    for operation in ('expand 16:9: ', 'zoom 2x: ', 'dream 1:1: ', 'upscale x4: '):
        assert operation in summary
    files = sorted(p.name for p in out.rglob('*') if p.is_file())
    assert len(files) <= 8, files  # what the device tool brings back
    assert 'operations.json' in files


def test_gpu_check_refuses_an_unknown_option_with_a_usage_line(tmp_path: Path) -> None:
    done = subprocess.run(
        ['bash', str(SCRIPT), '--device', 'tpu'], capture_output=True, text=True, env={**os.environ, 'OUT': str(tmp_path)}
    )
    assert done.returncode == 2
    assert '--device must be cpu or cuda' in done.stderr
    assert not (tmp_path / 'summary.txt').exists()  # nothing ran


def test_a_failing_step_does_not_stop_the_later_ones_and_the_exit_status_says_so(tmp_path: Path) -> None:
    """Every step fails at once here (no such Python): each is still tried, each is marked, and the script exits 1."""
    env = {**os.environ, 'OUT': str(tmp_path), 'PYTHON': str(tmp_path / 'no-such-python')}
    done = subprocess.run(
        ['bash', str(SCRIPT), '--device', 'cpu', '--preset', 'tiny'], capture_output=True, text=True, env=env
    )
    summary = (tmp_path / 'summary.txt').read_text()
    assert done.returncode == 1
    for step in ('tests_gpu', 'generation_mini', 'generation_mega', 'operations'):
        assert f'## {step}: FAILED' in summary
    assert 'RESULT: FAILED steps: tests_gpu generation_mini generation_mega operations' in summary
