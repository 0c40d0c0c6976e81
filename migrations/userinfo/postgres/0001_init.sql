-- userinfo-service schema (PostgreSQL). Times are nanoseconds since the Unix epoch.
CREATE TABLE profiles (
    user_id      TEXT PRIMARY KEY,
    real_name    TEXT NOT NULL,
    phone_number TEXT NOT NULL,
    avatar       TEXT NOT NULL,
    nick_name    TEXT NOT NULL,
    gender       TEXT NOT NULL,
    country_code TEXT NOT NULL,
    province     TEXT NOT NULL,
    city         TEXT NOT NULL,
    updated_at   BIGINT NOT NULL
);
