-- A refresh deletes its grant's spent tokens older than the last SPENT_REFRESH_TOKENS_KEPT
-- (generation below a bound): with the generation in the family's index it finds those rows
-- at once instead of reading the whole family (up to 65 rows) at every refresh. Statements
-- that read a family by id use the index's first column as before.
DROP INDEX refresh_tokens_family;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id, generation);
