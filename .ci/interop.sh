#!/usr/bin/env bash
# Runs interop/reflection_flow.py (grpcio + grpcio-reflection, no .proto files) against a
# fresh all-in-one. Usage: .ci/interop.sh PATH_TO_ALL_IN_ONE PYTHON
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
binary="$(realpath "$1")"
python="$2"
work="$(mktemp -d)"
cd "$work"
AUTH_ADDR=127.0.0.1:50061 USERINFO_ADDR=127.0.0.1:50062 "$binary" >"$work/out" 2>"$work/err" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q "all-in-one is up" "$work/out" 2>/dev/null && break
  sleep 0.2
done
grep -q "all-in-one is up" "$work/out" || { cat "$work/err"; exit 1; }
"$python" "$repo/interop/reflection_flow.py" 127.0.0.1:50061 127.0.0.1:50062 "$work/data/dev-credentials.env"
kill -TERM $pid
wait $pid
