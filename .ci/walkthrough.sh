#!/usr/bin/env bash
# Runs the README's grpcurl walkthrough exactly as written, against a fresh all-in-one.
# Blocks marked <!-- walkthrough --> must succeed; blocks marked
# <!-- walkthrough:fails REASON --> must fail and print REASON. Then runs the whole flow the
# all-in-one's banner prints, the same way.
# Usage: .ci/walkthrough.sh PATH_TO_ALL_IN_ONE_BINARY   (grpcurl and python3 on PATH)
#
#    or: .ci/walkthrough.sh --against AUTH_ADDR USERINFO_ADDR DIR
# against services already running (compose): first the README's <!-- compose-seed --> blocks
# (a demo app and users, written to DIR/data/dev-credentials.env), then the walkthrough, in
# DIR, with the README's addresses 127.0.0.1:50051 / :50052 replaced by the given ones. If
# WALKTHROUGH_AFTER_BLOCK names a command, it runs after each walkthrough block with the
# block's number (.ci/docker.sh kills replicas there).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
seeded=yes
if [ "${1:-}" = --against ]; then
  auth_addr="$2" userinfo_addr="$3"
  work="$(realpath "$4")"
else
  seeded=no
  binary="$(realpath "$1")"
  work="$(mktemp -d)"
  # shellcheck source=.ci/all-in-one.sh
  . "$repo/.ci/all-in-one.sh"
  start_all_in_one "$binary" "$work"
fi
script="$work/walkthrough.sh"

expected=$(python3 - "$repo/README.md" "$script" "$work/ran" "$seeded" "$auth_addr" "$userinfo_addr" <<'PY'
import re, sys
readme, out, ran, seeded, auth, userinfo = sys.argv[1:7]
text = open(readme).read()
blocks = re.findall(r"<!-- walkthrough(?::fails (\w+))? -->\s*```sh\n(.*?)```", text, re.S)
# Every sh block of the walkthrough section, and every marker, must be a block run here: a
# marker or fence that changed would otherwise drop its block without a word.
markers = text.count("<!-- walkthrough")
section = text.split("## grpcurl walkthrough", 1)[-1].split("\n## ", 1)[0]
fences = section.count("```sh")
if not blocks or not len(blocks) == markers == fences:
    sys.exit(f"README.md: {len(blocks)} walkthrough blocks recognised, but {markers} markers and "
             f"{fences} sh blocks in the walkthrough section (a marker or a fence changed?)")
lines = ["set -euo pipefail"]
readdress = lambda body: body.replace("127.0.0.1:50051", auth).replace("127.0.0.1:50052", userinfo)
seeds = []
if seeded == "yes":
    seeds = re.findall(r"<!-- compose-seed -->\s*```sh\n(.*?)```", text, re.S)
    assert seeds, "README has no <!-- compose-seed --> block"
    blocks = [("", seed) for seed in seeds] + [(f, b) for f, b in blocks]
for i, (fails, body) in enumerate(blocks, 1 - len(seeds)):
    body = readdress(body)
    lines.append(f"echo '--- {'seed' if i < 1 else 'walkthrough'} block {i}'")
    if fails:
        lines.append(f"if out=$( {{\n{body}\n}} 2>&1 ); then echo \"block {i} should have failed\"; echo \"$out\"; exit 1; fi")
        lines.append('echo "$out"')
        lines.append(f'grep -q {fails} <<<"$out" || {{ echo "block {i} did not fail with {fails}"; exit 1; }}')
    else:
        lines.append(body)
    if i >= 1:
        lines.append(f"echo {i} >>'{ran}'")
    if seeds and i >= 1:
        lines.append(f'[ -z "${{WALKTHROUGH_AFTER_BLOCK:-}}" ] || "$WALKTHROUGH_AFTER_BLOCK" {i}')
open(out, "w").write("\n".join(lines) + "\n")
print(len(blocks) - len(seeds))
PY
)
echo "$expected walkthrough blocks in README.md"

cd "$work"
rm -f "$work/ran"
if [ "$seeded" = yes ]; then
  bash "$script"
  ran=$(wc -l <"$work/ran")
  [ "$ran" -eq "$expected" ] || { echo "ran $ran of the $expected walkthrough blocks"; exit 1; }
  echo "walkthrough: the seed blocks and every walkthrough block behaved as the README says, against $auth_addr $userinfo_addr"
  exit 0
fi
bash "$script"
ran=$(wc -l <"$work/ran")
[ "$ran" -eq "$expected" ] || { echo "ran $ran of the $expected walkthrough blocks"; exit 1; }

echo '--- the flow the all-in-one banner prints'
sed -n '/^---8<--- whole flow/,/^---8<--- end of flow/p' "$work/all-in-one.out" | sed '1d;$d' >"$work/banner-flow.sh"
[ -s "$work/banner-flow.sh" ] || { echo "the banner printed no flow"; cat "$work/all-in-one.out"; exit 1; }
banner_out=$(bash -euo pipefail "$work/banner-flow.sh" 2>&1) || { echo "$banner_out"; echo "the banner's flow failed"; exit 1; }
echo "$banner_out"
for expected in nickName phoneNumber INVALID_AUTH_RELATIONS "refused, as it should be"; do
  grep -q "$expected" <<<"$banner_out" || { echo "the banner's flow did not show $expected"; exit 1; }
done

kill -TERM $pid
wait $pid
echo "walkthrough: all blocks behaved as the README says, so did the banner's flow; all-in-one exited 0 on SIGTERM"
