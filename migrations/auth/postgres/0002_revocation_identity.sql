-- Revoking what is already revoked writes nothing (issue 7): the log holds one rule per revoked
-- token and one per revoked grant family. Such a rule is never bounded by time (the token or
-- family is dead for good), so a second one for the same target is always redundant. Copies an
-- older version appended are dropped first, keeping the latest (widest) rule of each target.
DELETE FROM revocations
WHERE token_id IS NOT NULL
  AND sequence NOT IN (
    SELECT MAX(sequence) FROM revocations WHERE token_id IS NOT NULL
    GROUP BY app_id, token_id, user_id, scopes);
DELETE FROM revocations
WHERE grant_id IS NOT NULL AND token_id IS NULL
  AND sequence NOT IN (
    SELECT MAX(sequence) FROM revocations WHERE grant_id IS NOT NULL AND token_id IS NULL
    GROUP BY app_id, grant_id, user_id, scopes);

CREATE UNIQUE INDEX revocations_token ON revocations (app_id, token_id, user_id, scopes)
    WHERE token_id IS NOT NULL;
CREATE UNIQUE INDEX revocations_grant ON revocations (app_id, grant_id, user_id, scopes)
    WHERE grant_id IS NOT NULL AND token_id IS NULL;

-- An app's live token rules, counted against REVOCATION_QUOTA_PER_APP.
CREATE INDEX revocations_token_expiry ON revocations (app_id, expire_at)
    WHERE token_id IS NOT NULL;
