-- Token keys become Ed25519 signing keys (PASETO v4.public) with a subject key, sealed under
-- the master key. The symmetric v4.local keys of the first version were handed to verifiers,
-- so they are dropped here, not migrated: tokens minted under them stop verifying (consent
-- tokens are re-granted silently on the next tap; access tokens are refreshed with their
-- refresh tokens, which are unaffected). auth-service creates a new key at start-up.
DELETE FROM token_keys;

-- Secrets generated once and kept sealed under the master key (the pairwise-id secret), so
-- they survive a master key rotation.
CREATE TABLE sealed_secrets (
    name         TEXT PRIMARY KEY NOT NULL,
    sealed_value TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
