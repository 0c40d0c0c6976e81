#!/usr/bin/env bash
# Runs interop/reflection_flow.py (grpcio + grpcio-reflection, no .proto files) against a
# fresh all-in-one. Usage: .ci/interop.sh PATH_TO_ALL_IN_ONE PYTHON
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
binary="$(realpath "$1")"
python="$2"
work="$(mktemp -d)"
cd "$work"
# Ports the kernel picks, read back from the banner: fixed ones may be taken on a shared machine.
AUTH_ADDR=127.0.0.1:0 USERINFO_ADDR=127.0.0.1:0 "$binary" >"$work/out" 2>"$work/err" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q "all-in-one is up" "$work/out" 2>/dev/null && break
  sleep 0.2
done
grep -q "all-in-one is up" "$work/out" || { cat "$work/err"; exit 1; }
read -r auth_addr userinfo_addr < <(sed -nE 's/^AUTH=([0-9.:]+); USERINFO=([0-9.:]+);.*/\1 \2/p' "$work/out" | head -n 1)
[ -n "${userinfo_addr:-}" ] || { echo "the banner printed no addresses"; cat "$work/out"; exit 1; }
"$python" "$repo/interop/reflection_flow.py" "$auth_addr" "$userinfo_addr" "$work/data/dev-credentials.env"
kill -TERM $pid
wait $pid
