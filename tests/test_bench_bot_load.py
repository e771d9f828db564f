"""`bench/bot_load.py` at a tiny scale, so the load benchmark cannot rot.

Six members, one candidate each, no warm-up job: the real `edalle bot` entry point with its supervised
tiny worker against the fake Discord. Only correctness is asserted (every member acknowledged, every job
answered exactly once, each member charged once, the bot's loop monitor wrote its summary); latencies on
a shared 2-core CI machine say nothing, so they are printed, not checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bot_load_benchmark_small(bot_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / 'result.json'
    argv = [sys.executable, str(REPO / 'bench' / 'bot_load.py'), '--members', '6', '--candidates', '1', '--window', '1']
    argv += ['--batch', '8', '--settle', '1', '--no-warmup', '--cache-dir', str(bot_data_dir), '--json', str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert 'exactly once, none missing, charged once: PASS' in done.stdout, done.stdout
    result = json.loads(out.read_text())
    assert result['exactly_once'] and not result['timed_out'] and result['bot_exit'] == 0
    assert [row['result_posts'] for row in result['per_member']] == [1] * 6
    assert all(row['ack_ms'] is not None for row in result['per_member'])
    assert result['db']['succeeded'] == result['db']['delivered'] == result['db']['members_charged_once'] == 6
    assert result['loop'] is not None and result['loop']['ticks'] > 0  # the opt-in monitor ran and wrote its file
