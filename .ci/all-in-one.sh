# Sourced by .ci/walkthrough.sh and .ci/interop.sh: start_all_in_one BINARY DIR starts the
# all-in-one in DIR on ports the kernel picks (50051 is every gRPC example's default and may
# be taken on a shared machine), waits for its banner, and sets `pid`, `auth_addr` and
# `userinfo_addr` from it; its stdout is DIR/all-in-one.out, stderr DIR/all-in-one.err.
start_all_in_one() {
  local binary="$1" dir="$2"
  (cd "$dir" && exec env AUTH_ADDR=127.0.0.1:0 USERINFO_ADDR=127.0.0.1:0 "$binary" \
    >"$dir/all-in-one.out" 2>"$dir/all-in-one.err") &
  pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do
    grep -q "all-in-one is up" "$dir/all-in-one.out" 2>/dev/null && break
    sleep 0.2
  done
  grep -q "all-in-one is up" "$dir/all-in-one.out" || { cat "$dir/all-in-one.err"; exit 1; }
  read -r auth_addr userinfo_addr < <(sed -nE 's/^AUTH=([0-9.:]+); USERINFO=([0-9.:]+);.*/\1 \2/p' "$dir/all-in-one.out" | head -n 1)
  [ -n "${userinfo_addr:-}" ] || { echo "the banner printed no addresses"; cat "$dir/all-in-one.out"; exit 1; }
}
