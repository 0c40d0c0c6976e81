-- A refresh token's place in its grant's rotation (1: the one a code exchange issued), so a
-- grant rotated MAX_REFRESHES_PER_GRANT times must be authorized again; tokens from before
-- this migration count from 1.
ALTER TABLE refresh_tokens ADD COLUMN generation BIGINT NOT NULL DEFAULT 1;
-- A user's grants for an app, one exchanged code each, for MAX_GRANTS_PER_USER: the index holds
-- exchanged codes only, so finding them reads neither the codes still waiting for an exchange
-- nor the grants' refresh tokens (up to MAX_REFRESHES_PER_GRANT + 1 each).
CREATE INDEX auth_codes_exchanged ON auth_codes (app_id, user_id) WHERE used_at IS NOT NULL;
