"""`python -m edalle.worker …`: the same as `edalle worker …`."""

from __future__ import annotations

import sys

from edalle.worker.main import run_worker

if __name__ == '__main__':
    sys.exit(run_worker(sys.argv[1:]))
