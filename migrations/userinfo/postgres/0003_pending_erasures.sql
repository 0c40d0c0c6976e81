-- Erasures whose auth-service half has not been confirmed yet (issue 13): the user id only,
-- until auth-service has ended every authorization of the user; retried in the background.
CREATE TABLE pending_erasures (
    user_id      TEXT PRIMARY KEY NOT NULL,
    requested_at BIGINT NOT NULL
);
