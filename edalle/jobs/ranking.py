"""The fair order of the queue, as SQL text both stores share.

Round-robin across users, then priority, then age: each active job gets its rank within its user's
active jobs (running ones first, since they already hold a slot), and the queue is ordered by that
rank, so user A's fiftieth job waits behind user B's first. Within one rank, the user whose last job
started longest ago goes first: that is what makes it a rotation rather than "oldest job first" when
user A's running job finishes and A's next job ties with B's first. The same CTE orders `claim` and
`position`, so the number shown to a user is the order the workers really follow.

SQLite and PostgreSQL run this text unchanged; only the locking around it differs (`BEGIN IMMEDIATE`
here; `FOR UPDATE OF jobs SKIP LOCKED` there, where the eligibility test must be repeated on the
locked rows; see `edalle/jobs/postgres.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ACTIVE_RANKED = """
    ranked AS (
        SELECT j.id, j.kind, j.user_id, j.status, j.priority, j.compat_key, j.available_at,
               ROW_NUMBER() OVER (
                   PARTITION BY j.user_id
                   ORDER BY CASE j.status WHEN 'running' THEN 0 ELSE 1 END, j.priority DESC, j.id
               ) AS rk
        FROM jobs AS j
        WHERE j.status IN ('queued', 'running')
    ),
    active AS (
        -- last_start: when the user last had a job started, the round-robin pointer, read from the rows.
        -- Ranked first and joined after, so the scan stays on the active rows, not the users' history.
        SELECT r.*, coalesce((SELECT max(s.started_at) FROM jobs AS s WHERE s.user_id = r.user_id), 0) AS last_start
        FROM ranked AS r
    )
"""

# Within one round, higher priority first, then the user served longest ago, then the oldest job.
FAIR_ORDER = 'rk, priority DESC, last_start, id'


def compat_filter(prefixes: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """`(substr(compat_key, 1, length(:p0)) = :p0 OR …)` with its parameters; empty prefix list matches all.

    `substr` rather than `LIKE`, whose `_` and `%` are wildcards and whose case folding differs by dialect.
    """
    if not prefixes:
        return '1 = 1', {}
    terms, params = [], {}
    for i, prefix in enumerate(prefixes):
        terms.append(f'substr(compat_key, 1, length(:compat_{i})) = :compat_{i}')
        params[f'compat_{i}'] = prefix
    return '(' + ' OR '.join(terms) + ')', params


# The next claim: the fair-first eligible job and, behind it in fair order, more jobs with its compat key.
PICK_BATCH = """
    WITH {active_ranked},
    eligible AS (
        SELECT * FROM active WHERE status = 'queued' AND available_at <= :now AND {compat_filter}
    )
    SELECT id, kind, compat_key FROM eligible
    WHERE compat_key = (SELECT compat_key FROM eligible ORDER BY {fair_order} LIMIT 1)
    ORDER BY {fair_order}
    LIMIT :batch
"""


def pick_batch_query(prefixes: Sequence[str]) -> tuple[str, dict[str, Any]]:
    where, params = compat_filter(prefixes)
    return PICK_BATCH.format(active_ranked=ACTIVE_RANKED, compat_filter=where, fair_order=FAIR_ORDER), params
