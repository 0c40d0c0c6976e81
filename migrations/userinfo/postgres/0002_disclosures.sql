-- The disclosure ledger (issue 13): how often each mini program was given a user's public
-- profile or phone number, one row per user, app, kind and UTC day, counts added up by the
-- service's batched writer. A row exists only beside its user's profile and goes with it.
CREATE TABLE disclosures (
    user_id TEXT NOT NULL REFERENCES profiles (user_id) ON DELETE CASCADE,
    -- days since the Unix epoch, UTC
    day     BIGINT NOT NULL,
    app_id  TEXT NOT NULL,
    -- 1: the public profile (GetOpenUserInfo), 2: the phone number (GetPhoneNumber)
    fields  BIGINT NOT NULL,
    count   BIGINT NOT NULL,
    PRIMARY KEY (user_id, day, app_id, fields)
);
-- The retention sweep deletes by day.
CREATE INDEX disclosures_day ON disclosures (day);
