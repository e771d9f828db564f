"""`python -m edalle.worker …`: the same as `edalle worker …` (the bot starts its local worker this way).

It reads `.env` like every `edalle` command (the bot's child inherits the bot's environment anyway) and logs
in the same format.
"""

from __future__ import annotations

import sys

from edalle.startup import configure_logging, load_env_file, log_level
from edalle.worker.main import run_worker


def main() -> int:
    load_env_file()
    try:
        configure_logging(log_level())
    except ValueError as exc:  # a bad EDALLE_LOG_LEVEL: one line, no traceback
        print(f'edalle worker: {exc}', file=sys.stderr)
        return 2
    return run_worker(sys.argv[1:])


if __name__ == '__main__':
    sys.exit(main())
