-- Revises: nothing (first migration)
-- Created: 2026-11-21
-- Reason: the durable job queue, guild settings, per-user overrides and bans, the admin audit log
--
-- Times are Unix seconds (REAL) from the application's clock, never SQLite's: one clock for leases
-- and day boundaries, and tests can inject it. JSON columns hold TEXT.

CREATE TABLE IF NOT EXISTS jobs (
    id                INTEGER PRIMARY KEY,
    kind              TEXT    NOT NULL,                -- 'imagine' | 'expand' (workers may serve more)
    status            TEXT    NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    user_id           INTEGER NOT NULL,
    guild_id          INTEGER,                         -- NULL in direct messages
    channel_id        INTEGER,
    request_key       TEXT    UNIQUE,                  -- idempotency: the Discord message/interaction id
    parent_job_id     INTEGER REFERENCES jobs (id),    -- expand: the imagine job ...
    parent_index      INTEGER,                         -- ... and the candidate index in it
    compat_key        TEXT    NOT NULL,                -- jobs with equal keys may run as one batch
    payload           TEXT    NOT NULL,                -- JSON: prompt, n, seed, ratio, steps ...
    priority          INTEGER NOT NULL DEFAULT 0,      -- higher first, within one round-robin round
    available_at      REAL    NOT NULL,                -- not claimable before (retry back-off)
    -- the lease: attempt is the fencing token, bumped by every claim
    attempt           INTEGER NOT NULL DEFAULT 0,
    handbacks         INTEGER NOT NULL DEFAULT 0,      -- claims given back cleanly (SIGTERM): not failures
    max_attempts      INTEGER NOT NULL DEFAULT 3,
    worker_id         TEXT,
    lease_until       REAL,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    -- progress, written by the worker at most about once a second
    stage             TEXT,
    step              INTEGER,
    total             INTEGER,
    preview_path      TEXT,                            -- relative to the data dir
    progress_at       REAL,
    -- outcome
    result            TEXT,                            -- JSON summary; files live under images/<id>/
    error             TEXT,                            -- a sentence the user can read
    created_at        REAL    NOT NULL,
    started_at        REAL,
    finished_at       REAL,
    run_seconds       REAL,                            -- wall time of the successful run (ETA)
    -- delivery to Discord: at most one poster at a time, each result posted once
    status_message_id INTEGER,                         -- the "queued / progress" message the bot edits
    delivery_owner    TEXT,
    delivery_attempt  INTEGER NOT NULL DEFAULT 0,
    delivery_until    REAL,
    delivered_at      REAL,
    result_message_id INTEGER
);
-- the claim and position queries scan the active rows only
CREATE INDEX IF NOT EXISTS jobs_active ON jobs (user_id, priority, id) WHERE status IN ('queued', 'running');
-- quotas and cooldowns: a user's jobs of the day
CREATE INDEX IF NOT EXISTS jobs_user_day ON jobs (user_id, created_at);
-- fair order: when each user last had a job started (the round-robin pointer)
CREATE INDEX IF NOT EXISTS jobs_user_started ON jobs (user_id, started_at);
CREATE INDEX IF NOT EXISTS jobs_undelivered ON jobs (id)
    WHERE delivered_at IS NULL AND status IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX IF NOT EXISTS jobs_recent_runs ON jobs (kind, finished_at) WHERE status = 'succeeded';

-- Admin-tunable settings, one row per key. guild_id 0 holds bot-wide values (direct messages, and the
-- layer between the code defaults and each guild). value is JSON.
CREATE TABLE IF NOT EXISTS guild_settings (
    guild_id   INTEGER NOT NULL,
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    updated_at REAL    NOT NULL,
    updated_by INTEGER,
    PRIMARY KEY (guild_id, key)
);

-- Per-user limit overrides within a guild (guild_id 0: everywhere).
CREATE TABLE IF NOT EXISTS user_overrides (
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    updated_at REAL    NOT NULL,
    updated_by INTEGER,
    PRIMARY KEY (guild_id, user_id, key)
);

CREATE TABLE IF NOT EXISTS user_bans (
    guild_id  INTEGER NOT NULL,                        -- 0: banned everywhere
    user_id   INTEGER NOT NULL,
    reason    TEXT,
    until     REAL,                                    -- NULL: until unbanned
    banned_by INTEGER,
    banned_at REAL    NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

-- Every admin change, as it was made; never updated.
CREATE TABLE IF NOT EXISTS admin_actions (
    id             INTEGER PRIMARY KEY,
    guild_id       INTEGER NOT NULL,
    actor_id       INTEGER,
    action         TEXT    NOT NULL,                   -- 'set_setting' | 'set_override' | 'ban' | 'unban'
    target_user_id INTEGER,
    key            TEXT,
    old_value      TEXT,                               -- JSON, NULL when unset
    new_value      TEXT,
    reason         TEXT,
    created_at     REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS admin_actions_guild ON admin_actions (guild_id, id);

-- Workers say they are alive; the bot uses it for ETAs and "no worker is online".
CREATE TABLE IF NOT EXISTS workers (
    id         TEXT PRIMARY KEY,
    info       TEXT NOT NULL,                          -- JSON: host, pid, preset, kinds, batch
    started_at REAL NOT NULL,
    seen_at    REAL NOT NULL
);
