-- What a modal was asked for and showed, kept on its prompt so that the GRANTED or DENIED
-- record written when the user answers carries them (issue 13): the trigger that opened it
-- (0: unknown, for prompts written before this migration) and the purposes as shown (a JSON
-- list like consent_records.purposes), since the declaration may be replaced before the answer.
ALTER TABLE prompts ADD COLUMN trigger_kind BIGINT NOT NULL DEFAULT 0;
ALTER TABLE prompts ADD COLUMN purposes TEXT NOT NULL DEFAULT '[]';
