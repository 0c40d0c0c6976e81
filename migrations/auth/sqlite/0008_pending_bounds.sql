-- A user's prompts for an app, for MAX_OPEN_PROMPTS_PER_USER, and an erasure's delete of the
-- user's prompts: both find them here instead of reading the table.
CREATE INDEX prompts_user ON prompts (user_id, app_id);
