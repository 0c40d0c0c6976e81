-- An erasure deletes the user's prompts, auth codes and refresh tokens by user id alone
-- (`erase_user`); with no index starting with user_id each erasure read the three tables
-- whole while it held the writer. These make it three index lookups.
CREATE INDEX prompts_user ON prompts (user_id);
CREATE INDEX auth_codes_user ON auth_codes (user_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
