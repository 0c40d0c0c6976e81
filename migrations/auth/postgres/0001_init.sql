-- auth-service schema (PostgreSQL). Times are nanoseconds since the Unix epoch; scope and
-- feature sets are bit sets; codes, refresh tokens, prompt ids and app secrets are SHA-256 hashes.

CREATE TABLE apps (
    app_id       TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    secret_hash  BYTEA NOT NULL,
    features     BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL
);

CREATE TABLE authorizations (
    user_id    TEXT NOT NULL,
    app_id     TEXT NOT NULL REFERENCES apps (app_id),
    granted    BIGINT NOT NULL,
    denied     BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id)
);

CREATE TABLE prompts (
    prompt_hash       BYTEA PRIMARY KEY,
    user_id           TEXT NOT NULL,
    app_id            TEXT NOT NULL,
    scopes            BIGINT NOT NULL,
    previously_denied BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    resolved_at       BIGINT
);
CREATE INDEX prompts_expires_at ON prompts (expires_at);

CREATE TABLE auth_codes (
    code_hash         BYTEA PRIMARY KEY,
    grant_id          TEXT NOT NULL,
    app_id            TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    scopes            BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    used_at           BIGINT,
    family_revoked_at BIGINT,
    purge_at          BIGINT NOT NULL
);
CREATE INDEX auth_codes_purge_at ON auth_codes (purge_at);
CREATE INDEX auth_codes_grant ON auth_codes (grant_id);

CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    family_id  TEXT NOT NULL,
    app_id     TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    scopes     BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_subject ON refresh_tokens (app_id, user_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

-- Appends take an advisory lock, so sequences become visible in order: a verifier that has
-- seen sequence N never misses a smaller one committed later.
CREATE TABLE revocations (
    sequence      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app_id        TEXT NOT NULL,
    user_id       TEXT,
    scopes        BIGINT NOT NULL,
    token_id      TEXT,
    grant_id      TEXT,
    issued_before BIGINT NOT NULL,
    expire_at     BIGINT NOT NULL
);
CREATE INDEX revocations_expire_at ON revocations (expire_at);
CREATE INDEX revocations_subject ON revocations (app_id, user_id);

CREATE TABLE token_keys (
    key_id     TEXT PRIMARY KEY,
    sealed_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retire_at  BIGINT NOT NULL,
    expire_at  BIGINT NOT NULL
);
