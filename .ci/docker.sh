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
# Usage (root, Debian bookworm): bash .ci/docker.sh   (GRPCURL=path/to/grpcurl to reuse one)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${TMPDIR:-/tmp}/miniprogram-ci-tools"
IMAGE=miniprogram-userinfo:latest
# What the containers run as: a non-root uid that owns the master key and the data
# directories on this host, as the operator's own account does in the README.
OPERATOR_UID=4242
OPERATOR_GID=4242
export OPERATOR_UID OPERATOR_GID COMPOSE_HTTP_TIMEOUT=120 DOCKER_BUILDKIT=0

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
random_hex() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }

[ "$(id -u)" = 0 ] || fail "run as root (it installs packages and starts dockerd)"

work="$(mktemp -d /var/tmp/miniprogram-docker.XXXXXX)"
chmod 0755 "$work"
declare -a stacks=()   # "dir|project|compose files", to take down on exit
cleanup() {
  local rc=$? entry dir project files
  trap - EXIT
  for entry in "${stacks[@]}"; do
    IFS='|' read -r dir project files <<<"$entry"
    if [ "$rc" != 0 ]; then
      echo "--- logs of $project (last 60 lines each)"
      (cd "$dir" && docker-compose -p "$project" $files logs --no-color --tail=60) 2>&1 || true
    fi
    (cd "$dir" && docker-compose -p "$project" $files down -v --remove-orphans -t 5) >/dev/null 2>&1 || true
  done
  rm -rf "$work"
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
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
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
  rm -rf "$rootfs"
fi

if ! have_image "$rust_image"; then
  sysroot="$(rustc --print sysroot)"
  host_version="$(rustc --version | awk '{print $2}')"
  case "$host_version" in
    "${rust_image#rust:}"|"${rust_image#rust:}".*) ;;
    *) fail "$rust_image stand-in: this machine's rustc is $host_version; install ${rust_image#rust:} (rustup toolchain install) or change the Dockerfile's FROM" ;;
  esac
  echo "$rust_image: debian:bookworm-slim + gcc, libc6-dev, pkg-config + rustc $host_version from $sysroot"
  ctx="$work/rust-standin"
  mkdir -p "$ctx/toolchain/bin"
  cp -al "$sysroot/lib" "$ctx/toolchain/" 2>/dev/null || cp -a "$sysroot/lib" "$ctx/toolchain/"
  cp -a "$sysroot/bin/cargo" "$sysroot/bin/rustc" "$sysroot/bin/rustdoc" "$ctx/toolchain/bin/"
  docker build -q -t "$rust_image" -f "$repo/.ci/standins/rust.Dockerfile" "$ctx" >/dev/null
  rm -rf "$ctx"
fi

standin() {  # IMAGE DOCKERFILE: the stand-in built from .ci/standins when IMAGE is missing
  if ! have_image "$1"; then
    echo "$1: $2"
    docker build -q -t "$1" -f "$repo/.ci/standins/$2" "$repo/.ci/standins" >/dev/null
  fi
}
standin "$postgres_image" postgres.Dockerfile
standin "$nginx_image" nginx.Dockerfile
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' \
  | grep -E "^(debian:bookworm-slim|$rust_image|$postgres_image|$nginx_image) " || true
