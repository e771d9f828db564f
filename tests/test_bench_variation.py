"""The vary / repaint benchmark still runs (tiny sizes): it must not rot between the real runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / 'bench' / 'variation.py'


@pytest.mark.slow
def test_variation_benchmark_runs_every_case_and_prints_the_ratios(tiny_engine: Any) -> None:
    """In the tiny engine's data dir: its files and JAX's compile cache are made already."""
    command = [sys.executable, str(BENCH), '--model', 'tiny', '--rounds', '1', '--clip-steps', '1']
    done = subprocess.run(command + ['--data-dir', str(tiny_engine.data_dir)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'subtle variation of nine / imagine of nine:' in done.stdout
    assert 'tokens repaint of B2:C3 / imagine of nine:' in done.stdout and 's per step; expand 16:9:' in done.stdout
    assert 'kept rows token-identical: True; the repaint keeps every token outside the region: True' in done.stdout
