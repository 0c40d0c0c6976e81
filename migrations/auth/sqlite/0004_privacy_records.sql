-- Privacy by record (issue 13): consent history, the change feed app backends follow, and
-- the purposes apps declare per scope.

-- What each app declares it does with a scope, shown in the consent modal. The app row keeps
-- the version in force and which scopes it covers, so the grant path reads no extra row.
CREATE TABLE privacy_declarations (
    app_id  TEXT NOT NULL REFERENCES apps (app_id),
    scope   INTEGER NOT NULL,
    purpose TEXT NOT NULL,
    PRIMARY KEY (app_id, scope)
);
ALTER TABLE apps ADD COLUMN declaration_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE apps ADD COLUMN declared_scopes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE apps ADD COLUMN declared_at INTEGER NOT NULL DEFAULT 0;

-- The declaration version the standing consent was given under; the grant id consent tokens
-- carry while it stands (new after a full withdrawal); the app-scoped id once the app has been
-- given it (by exchanging a code), so the change feed only ever names what the app knows.
ALTER TABLE authorizations ADD COLUMN declaration_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE authorizations ADD COLUMN grant_ref TEXT;
ALTER TABLE authorizations ADD COLUMN open_user_id TEXT;

-- The declaration version a modal showed, so the answer is recorded against it.
ALTER TABLE prompts ADD COLUMN declaration_version INTEGER NOT NULL DEFAULT 0;

-- Every consent decision, immutable, kept for CONSENT_RECORD_RETENTION. No profile fields.
CREATE TABLE consent_records (
    record_id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id             TEXT NOT NULL,
    app_id              TEXT NOT NULL,
    event               INTEGER NOT NULL,
    scopes              INTEGER NOT NULL,
    trigger_kind        INTEGER NOT NULL,
    purposes            TEXT NOT NULL,
    declaration_version INTEGER NOT NULL,
    recorded_at         INTEGER NOT NULL,
    expire_at           INTEGER NOT NULL
);
CREATE INDEX consent_records_user ON consent_records (user_id, record_id);
CREATE INDEX consent_records_expire_at ON consent_records (expire_at);

-- Authorizations that ended, per app, for WatchAuthorizationChanges. Appended under the
-- revocation log's lock in the same transaction, so sequences become visible in order.
CREATE TABLE authorization_changes (
    sequence     INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id       TEXT NOT NULL,
    open_user_id TEXT,
    grant_ref    TEXT,
    scopes       INTEGER NOT NULL,
    reason       INTEGER NOT NULL,
    changed_at   INTEGER NOT NULL,
    expire_at    INTEGER NOT NULL
);
CREATE INDEX authorization_changes_app ON authorization_changes (app_id, sequence);
CREATE INDEX authorization_changes_expire_at ON authorization_changes (expire_at);
