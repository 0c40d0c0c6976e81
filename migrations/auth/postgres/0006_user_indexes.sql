-- An erasure deletes the user's auth codes and refresh tokens by user id alone (`erase_user`);
-- both are kept for weeks (a code as long as its refresh family can live), and with no index
-- starting with user_id each erasure read both tables whole while it held the writer. Prompts
-- are left as they are: they live minutes (PROMPT_TTL, then swept), and an index would cost
-- the prompt path more than a scan of them costs an erasure.
CREATE INDEX auth_codes_user ON auth_codes (user_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
