-- A refresh token's place in its grant's rotation (1: the one a code exchange issued), so a
-- grant rotated MAX_REFRESHES_PER_GRANT times must be authorized again; tokens from before
-- this migration count from 1. The partial index finds a user's live grants for an app (one
-- unspent, unrevoked token each), least recently refreshed first, for MAX_GRANTS_PER_USER.
ALTER TABLE refresh_tokens ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
CREATE INDEX refresh_tokens_live ON refresh_tokens (app_id, user_id, created_at)
    WHERE used_at IS NULL AND revoked_at IS NULL;
