-- Revises: 0002
-- Created: 2026-12-07
-- Reason: a member's own defaults for the imagine knobs (`/settings`): one JSON value per key, the same in
-- every server (the knobs are about how a member likes to draw, not about a server's rules).

CREATE TABLE IF NOT EXISTS member_settings (
    user_id    BIGINT           NOT NULL,
    key        TEXT             NOT NULL,
    value      TEXT             NOT NULL,  -- JSON
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_id, key)
);
