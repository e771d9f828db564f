"""`bench/expansion.py` at a tiny scale (the test VQGAN and CLIP, 4 views, one timed step), so it cannot rot.

Only the plumbing and the safeguards are asserted: every variant ran and was timed, every ratio was
computed and judged, the default output's centre is the source bit for bit, and the default's views
cover the canvas evenly where the original's leave the outer columns almost unseen. Timings of tiny
models on a shared 2-core machine say nothing about the real sizes, so they are not checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_expansion_benchmark_tiny(tmp_path: Path) -> None:
    out = tmp_path / 'result.json'
    argv = [sys.executable, str(REPO / 'bench' / 'expansion.py'), '--scale', 'tiny', '--cutn', '4']
    argv += ['--timed-steps', '1', '--rounds', '1', '--json', str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert '(a) per step at equal steps and cutouts' in done.stdout
    assert '(b) per expansion at defaults' in done.stdout
    result = json.loads(out.read_text())
    names = {'classic', 'default@equal', 'classic io off', 'default'}
    assert names <= set(result['summaries'])
    for name in names:
        summary = result['summaries'][name]
        assert summary['steps_measured'] == 1 and summary['step_wall'] > 0 and summary['step_cpu'] > 0
        assert summary['peak_gb'] > 0
    for key in ('per_step_wall_vs_classic', 'per_step_cpu_vs_classic', 'per_expansion_wall', 'per_expansion_cpu'):
        assert result['ratios'][key] > 0
    assert result['checks']['centre_exact'] is True
    assert result['checks']['even_coverage'] is True
    cover = result['checks']['coverage']
    assert cover['classic']['outer_column'] < 0.05  # the original's outer columns: ~0.5 % of views
    assert cover['default']['band_min'] > 0.3  # the default's: ~40 %
    assert result['movement']['default']['sum_lr'] > 10


@pytest.mark.slow
def test_canvas_benchmark_tiny(tmp_path: Path) -> None:
    """`--canvas`: every operation ran and was timed, the ratios and the ETA model were computed, the source kept."""
    out = tmp_path / 'canvas.json'
    argv = [sys.executable, str(REPO / 'bench' / 'expansion.py'), '--canvas', '--scale', 'tiny']
    argv += ['--timed-steps', '1', '--rounds', '1', '--json', str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert 'pan right 768 / pan right 256' in done.stdout and 'ETA model' in done.stdout
    result = json.loads(out.read_text())
    names = {'expand 16:9', 'pan right 256', 'pan right 768', 'zoom 1.5x', 'zoom 2x', 'dream 256', 'dream 256 frames'}
    assert set(result['summaries']) == names
    for summary in result['summaries'].values():
        assert summary['steps_measured'] == 1 and summary['step_cpu'] > 0 and summary['peak_gb'] > 0
    for key in ('pan_768_over_256', 'zoom_1_5_over_expand', 'zoom_2_over_expand', 'dream_over_expand', 'frames_on_over_off'):
        assert result['ratios'][key] > 0
    assert result['checks']['source_exact'] is True and result['checks']['frame_count'] is True
    assert 0 < result['checks']['record_share'] < 1
    assert result['costs']['per_view'] > 0
    assert result['runs']['zoom 2x'][0]['size'] == [512, 512]
