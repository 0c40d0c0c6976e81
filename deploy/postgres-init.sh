#!/bin/sh
# Run once by the postgres image, when its volume is first initialised
# (/docker-entrypoint-initdb.d): a role and a database for each service, each service's
# role owning its database and nothing else. The passwords come from the environment
# (docker-compose.scale.yml passes AUTH_DB_PASSWORD and USERINFO_DB_PASSWORD).
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  --set auth_password="$AUTH_DB_PASSWORD" --set userinfo_password="$USERINFO_DB_PASSWORD" <<'SQL'
CREATE ROLE auth LOGIN PASSWORD :'auth_password';
CREATE DATABASE auth OWNER auth;
REVOKE ALL ON DATABASE auth FROM PUBLIC;
CREATE ROLE userinfo LOGIN PASSWORD :'userinfo_password';
CREATE DATABASE userinfo OWNER userinfo;
REVOKE ALL ON DATABASE userinfo FROM PUBLIC;
SQL
