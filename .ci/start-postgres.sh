#!/usr/bin/env bash
# Starts a throwaway PostgreSQL (installed on the image, not running) on 127.0.0.1:$PGPORT
# and prints the TEST_DATABASE_URL for it. Usage: eval "$(.ci/start-postgres.sh)"
set -euo pipefail
PGPORT="${PGPORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
bindir="$(dirname "$(readlink -f "$(command -v initdb || echo /usr/lib/postgresql/15/bin/initdb)")")"
data="$(mktemp -d "${TMPDIR:-/tmp}/pgdata.XXXXXX")"
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$data"
  as_pg=(runuser -u postgres --)
fi
"${as_pg[@]}" "$bindir/initdb" -D "$data" -A trust -U postgres --no-sync >/dev/null
"${as_pg[@]}" "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $data -c fsync=off -c max_connections=300" start >/dev/null
echo "export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$PGPORT/postgres"
echo "export PGDATA_CI=$data"
