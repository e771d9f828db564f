"""The generation benchmark still runs (tiny sizes): it must not rot between the real runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / 'bench' / 'generation.py'


@pytest.mark.slow
def test_generation_benchmark_runs_both_sides_and_prints_the_ratio() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), '--model', 'tiny', '--rounds', '1', '--counts', '1', '--min-dalle-counts', '1'],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'one candidate, edalle / min-dalle:' in done.stdout
    assert 'peak memory edalle' in done.stdout and 'peak memory min-dalle' in done.stdout


@pytest.mark.slow
def test_sampler_benchmark_runs_every_case_against_a_baseline_commit() -> None:
    command = [sys.executable, str(BENCH), '--sampler', '--model', 'tiny', '--rounds', '1', '--baseline-commit', 'HEAD']
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'default knobs / baseline:' in done.stdout and 'mixed knobs / uniform:' in done.stdout
    assert (
        'tokens equal to the baseline: True; previews change nothing: True; the variation keeps its rows: True'
        in done.stdout
    )
