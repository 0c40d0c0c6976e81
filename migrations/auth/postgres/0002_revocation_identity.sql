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

-- How many token rules each app holds, by the five-minute window they expire in, so checking
-- an app against REVOCATION_QUOTA_PER_APP sums a few rows instead of counting its rules. A
-- window is swept once it has ended, like the rules it counts.
CREATE TABLE revocation_quota (
    app_id    TEXT NOT NULL,
    expire_by BIGINT NOT NULL,
    rules     BIGINT NOT NULL,
    PRIMARY KEY (app_id, expire_by)
);
CREATE INDEX revocation_quota_expire_by ON revocation_quota (expire_by);
INSERT INTO revocation_quota (app_id, expire_by, rules)
SELECT app_id, expire_by, COUNT(*) FROM (
    SELECT app_id,
           CASE WHEN expire_at > 9223371736854775807 THEN 9223372036854775807
                ELSE (expire_at + 299999999999) / 300000000000 * 300000000000 END AS expire_by
    FROM revocations WHERE token_id IS NOT NULL) AS windows
GROUP BY app_id, expire_by;
