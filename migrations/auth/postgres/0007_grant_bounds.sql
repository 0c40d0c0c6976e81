-- A refresh token's place in its grant's rotation (1: the one a code exchange issued), so a
-- grant rotated MAX_REFRESHES_PER_GRANT times must be authorized again; tokens from before
-- this migration count from 1. A user's live grants for an app (MAX_GRANTS_PER_USER) are found
-- through refresh_tokens_subject: a partial index of live tokens made every exchange, refresh
-- and family revocation 5-20% slower in the bench, for reads of at most 16 x 10,001 rows.
ALTER TABLE refresh_tokens ADD COLUMN generation BIGINT NOT NULL DEFAULT 1;
