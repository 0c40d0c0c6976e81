-- auth-service schema (SQLite). Times are nanoseconds since the Unix epoch; scope and feature
-- sets are bit sets; codes, refresh tokens, prompt ids and app secrets are SHA-256 hashes.

CREATE TABLE apps (
    app_id       TEXT PRIMARY KEY NOT NULL,
    display_name TEXT NOT NULL,
    secret_hash  BLOB NOT NULL,
    features     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);

CREATE TABLE authorizations (
    user_id    TEXT NOT NULL,
    app_id     TEXT NOT NULL REFERENCES apps (app_id),
    granted    INTEGER NOT NULL,
    denied     INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, app_id)
);

CREATE TABLE prompts (
    prompt_hash       BLOB PRIMARY KEY NOT NULL,
    user_id           TEXT NOT NULL,
    app_id            TEXT NOT NULL,
    scopes            INTEGER NOT NULL,
    previously_denied INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    resolved_at       INTEGER
);
CREATE INDEX prompts_expires_at ON prompts (expires_at);

CREATE TABLE auth_codes (
    code_hash         BLOB PRIMARY KEY NOT NULL,
    grant_id          TEXT NOT NULL,
    app_id            TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    scopes            INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    used_at           INTEGER,
    family_revoked_at INTEGER,
    purge_at          INTEGER NOT NULL
);
CREATE INDEX auth_codes_purge_at ON auth_codes (purge_at);
CREATE INDEX auth_codes_grant ON auth_codes (grant_id);

CREATE TABLE refresh_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    family_id  TEXT NOT NULL,
    app_id     TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    scopes     INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    revoked_at INTEGER
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_subject ON refresh_tokens (app_id, user_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

CREATE TABLE revocations (
    sequence      INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id        TEXT NOT NULL,
    user_id       TEXT,
    scopes        INTEGER NOT NULL,
    token_id      TEXT,
    grant_id      TEXT,
    issued_before INTEGER NOT NULL,
    expire_at     INTEGER NOT NULL
);
CREATE INDEX revocations_expire_at ON revocations (expire_at);
CREATE INDEX revocations_subject ON revocations (app_id, user_id);

CREATE TABLE token_keys (
    key_id     TEXT PRIMARY KEY NOT NULL,
    sealed_key TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    retire_at  INTEGER NOT NULL,
    expire_at  INTEGER NOT NULL
);
