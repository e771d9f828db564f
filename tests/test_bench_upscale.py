"""The upscale benchmark still runs (tiny network, small pictures): it must not rot between the real runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / 'bench' / 'upscale.py'


@pytest.mark.slow
def test_upscale_benchmark_runs_tiled_and_untiled_cases_in_subprocesses() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), '--models', 'tiny', '--sizes', '48', '--tiles', '32,none', '--rounds', '2'],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith('| tiny |')]
    assert [row.split(' | ')[2] for row in rows] == ['32', 'none']
    assert all('48² → 192²' in row for row in rows)
    assert 'load average before' in done.stdout and 'load average after' in done.stdout
