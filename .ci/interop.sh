#!/usr/bin/env bash
# Runs interop/reflection_flow.py (grpcio + grpcio-reflection, no .proto files) against a
# fresh all-in-one. Usage: .ci/interop.sh PATH_TO_ALL_IN_ONE PYTHON
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
binary="$(realpath "$1")"
python="$2"
work="$(mktemp -d)"
# shellcheck source=.ci/all-in-one.sh
. "$repo/.ci/all-in-one.sh"
start_all_in_one "$binary" "$work"
"$python" "$repo/interop/reflection_flow.py" "$auth_addr" "$userinfo_addr" "$work/data/dev-credentials.env"
kill -TERM $pid
wait $pid
