-- Revises: 0001
-- Created: 2026-12-07
-- Reason: operations. Every optimising job (expand, zoom, pan, repaint, dream, upscale) counts against one
-- daily bucket, `daily_edits`, which replaces `daily_expands`. Admins' values carry over under the new name;
-- where a row of the new name already exists it wins, and the old row goes.

UPDATE guild_settings SET key = 'daily_edits'
WHERE key = 'daily_expands'
  AND NOT EXISTS (
      SELECT 1 FROM guild_settings AS newer
      WHERE newer.guild_id = guild_settings.guild_id AND newer.key = 'daily_edits'
  );
DELETE FROM guild_settings WHERE key = 'daily_expands';

UPDATE user_overrides SET key = 'daily_edits'
WHERE key = 'daily_expands'
  AND NOT EXISTS (
      SELECT 1 FROM user_overrides AS newer
      WHERE newer.guild_id = user_overrides.guild_id AND newer.user_id = user_overrides.user_id
        AND newer.key = 'daily_edits'
  );
DELETE FROM user_overrides WHERE key = 'daily_expands';
