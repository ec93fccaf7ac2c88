#!/usr/bin/env bash
# Builds Impulse's container image with Podman from a local Debian base and a prebuilt
# `impulse`, runs it as CI and Kubernetes would (read-only root, every capability dropped,
# non-root, host network) and checks what an operator relies on: health, readiness, an
# invocation, metrics, the data volume, no zombie processes after a process function orphans a
# grandchild, and `podman stop` → exit 0 within the shutdown grace. No registry is needed (none
# is reachable here): the base image comes from debootstrap and the binary from the host.
#
#   scripts/container-smoke.sh        prints one line per check, then
#                                     `container smoke: N passed, N failed`; exits 1 on a failure
#
# Environment:
#   IMPULSE_SMOKE_BINARY   the impulse binary to put in the image; default
#                          ${CARGO_TARGET_DIR:-target}/debug/impulse (what `cargo test` built:
#                          a release build would cost CI minutes of fat LTO)
#   IMPULSE_CONTAINER_CACHE  where the debootstrapped base's tarball is kept between runs;
#                          default /var/cache/impulse-container
#   IMPULSE_SERVICES_DIR   state (containers.conf); default <repo>/.services
#
# Needs root (podman's rootful storage, debootstrap); installs podman, runc and debootstrap
# from Debian when they are missing. The base image is built once and kept as
# localhost/impulse-base:bookworm for later runs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${IMPULSE_SERVICES_DIR:-$ROOT/.services}/container
CACHE=${IMPULSE_CONTAINER_CACHE:-/var/cache/impulse-container}
BINARY=${IMPULSE_SMOKE_BINARY:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/impulse}
# What the base needs beyond minbase: the image's init and the system's root certificates
# (the Dockerfile installs them itself on a base without them).
BASE_PACKAGES=tini,ca-certificates
BASE_IMAGE=localhost/impulse-base:bookworm
IMAGE=localhost/impulse:smoke
# Unique per run, so that concurrent runs never remove each other's containers.
RUN_ID=impulse-smoke-$$
# impulse's default --shutdown-grace is 30 s; podman gets longer before it sends SIGKILL.
STOP_TIMEOUT=35
UID_IN_IMAGE=10001

PASSED=0
FAILED=0
CONTAINERS=()
WORK=

log() { printf '%s\n' "$*"; }
die() {
  printf 'container-smoke.sh: %s\n' "$*" >&2
  exit 1
}

pass() {
  PASSED=$((PASSED + 1))
  log "ok   - $1"
}
fail() {
  FAILED=$((FAILED + 1))
  log "FAIL - $1"
  shift
  local line
  for line in "$@"; do log "       $line"; done
}

cleanup() {
  local name
  for name in "${CONTAINERS[@]}"; do
    podman rm -f -v -t 0 "$name" >/dev/null 2>&1 || true
  done
  [[ -z $WORK ]] || rm -rf "$WORK"
}
trap cleanup EXIT

# --- tools -----------------------------------------------------------------------------------

ensure_tools() {
  local pkgs=() sudo=''
  command -v podman >/dev/null || pkgs+=(podman)
  command -v runc >/dev/null || pkgs+=(runc)
  command -v debootstrap >/dev/null || pkgs+=(debootstrap)
  command -v curl >/dev/null || pkgs+=(curl)
  command -v objcopy >/dev/null || pkgs+=(binutils)
  ((${#pkgs[@]})) || return 0
  [[ $(id -u) == 0 ]] || sudo=sudo
  log "installing: ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

# Podman's defaults fail on these machines (CONTAINERS.md): crun rejects the hybrid cgroup
# mount, and the default nofile rlimit exceeds the VM's hard limit.
write_containers_conf() {
  local nofile
  nofile=$(ulimit -Hn)
  [[ $nofile == unlimited ]] && nofile=1048576
  mkdir -p "$STATE"
  cat >"$STATE/containers.conf" <<EOF
# Written by scripts/container-smoke.sh.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
  export CONTAINERS_CONF=$STATE/containers.conf
}

# The Debian mirror apt uses on this machine.
debian_mirror() {
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' |
    grep -v -- '-security' | head -n1)
  if [[ -z $uri ]]; then
    uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | head -n1)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

# localhost/impulse-base:bookworm: Debian 12 minbase with tini and ca-certificates, from the
# cached tarball or debootstrap.
ensure_base_image() {
  local tarball=$CACHE/bookworm-minbase-${BASE_PACKAGES//,/-}.tar rootfs
  if podman image exists "$BASE_IMAGE"; then
    return
  fi
  if [[ ! -s $tarball ]]; then
    log "base image: debootstrap bookworm (minbase + $BASE_PACKAGES) from $(debian_mirror)"
    mkdir -p "$CACHE"
    rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$rootfs" \
        "$(debian_mirror)" >"$CACHE/debootstrap.log" 2>&1; then
      tail -n 20 "$CACHE/debootstrap.log" >&2
      rm -rf "$rootfs"
      die "debootstrap failed (log: $CACHE/debootstrap.log)"
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  podman import --quiet "$tarball" "$BASE_IMAGE" >/dev/null
}

# --- helpers ---------------------------------------------------------------------------------

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A loopback port nothing listens on (host networking: the container binds it directly).
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    port_open "$port" || break
  done
  echo "$port"
}

# poll TIMEOUT_S COMMAND...: runs COMMAND until it succeeds or the time is up.
poll() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

http_ok() { curl -sf -m 2 -o /dev/null "$1"; }

# The processes of container $1 as "user pid ppid state comm" lines.
processes() { podman top "$1" user pid ppid state comm 2>/dev/null | tail -n +2; }

# True when container $1 has no zombie and no process named $2 left (reaped).
reaped() {
  local ps
  ps=$(processes "$1") || return 1
  [[ -n $ps ]] || return 1
  ! awk -v name="$2" '$4 ~ /^Z/ || $5 == name { found = 1 } END { exit !found }' <<<"$ps"
}

# True when container $1 holds a zombie process.
has_zombie() { processes "$1" | awk '$4 ~ /^Z/ { found = 1 } END { exit !found }'; }

container_log() { podman logs "$1" 2>&1 | tail -n 15 | sed 's/^/         | /'; }

# run_container NAME LISTEN ADMIN [podman run options...]: starts the image as CI and a
# Kubernetes pod would, with the smoke config mounted read-only.
run_container() {
  local name=$1 listen=$2 admin=$3
  shift 3
  CONTAINERS+=("$name")
  podman run -d --name "$name" --network host \
    --read-only --cap-drop=ALL --security-opt no-new-privileges \
    -e IMPULSE_LISTEN="127.0.0.1:$listen" -e IMPULSE_ADMIN_LISTEN="127.0.0.1:$admin" \
    -e RUST_LOG=info \
    -v "$WORK/impulse.toml:/etc/impulse/impulse.toml:ro" \
    "$@" >/dev/null
}

# --- the checks ------------------------------------------------------------------------------

main() {
  [[ -x $BINARY ]] || die "no impulse binary at $BINARY: build it first (cargo build -p impulse-broker --bin impulse) or set IMPULSE_SMOKE_BINARY"
  ensure_tools
  write_containers_conf
  local t0=$SECONDS
  ensure_base_image
  log "base image: $BASE_IMAGE ready in $((SECONDS - t0))s"

  WORK=$(mktemp -d)
  # A minimal build context: the Dockerfile's runtime stage needs only the binary (without
  # debug line tables, so the image stays small) and the default config.
  mkdir -p "$WORK/context/deploy"
  objcopy --strip-debug "$BINARY" "$WORK/context/impulse"
  cp "$ROOT/deploy/impulse.toml" "$WORK/context/deploy/impulse.toml"
  cp "$ROOT/.dockerignore" "$WORK/context/.dockerignore"
  # The smoke config: the example function, and `forker`, whose worker leaves an orphan
  # behind — a subshell starts `sleep` in the background and exits, so `sleep` is reparented to
  # PID 1 — before it becomes the example function.
  cat >"$WORK/impulse.toml" <<'EOF'
[functions.hello]
timeout = "3s"
target = { type = "process", command = "/usr/local/bin/impulse", args = ["example-function"] }

[triggers.hello]
type = "http"
function = "hello"
path = "/hello"

[functions.forker]
timeout = "3s"
target = { type = "process", command = "/bin/sh", args = ["-c", "(/bin/sleep 0.5 &); exec /usr/local/bin/impulse example-function"] }

[triggers.forker]
type = "http"
function = "forker"
path = "/forker"
EOF
  chmod 0644 "$WORK/impulse.toml"

  t0=$SECONDS
  if podman build --quiet --pull=never --network host -f "$ROOT/Dockerfile" \
      --build-arg BASE="$BASE_IMAGE" --build-arg BIN=prebuilt --build-arg BINARY=impulse \
      -t "$IMAGE" "$WORK/context" >"$WORK/build.log" 2>&1; then
    pass "image builds from $BASE_IMAGE and the prebuilt $(basename "$BINARY") ($((SECONDS - t0))s)"
  else
    fail "image builds" "$(tail -n 20 "$WORK/build.log")"
    summary
  fi

  local user
  user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
  if [[ $user == "$UID_IN_IMAGE:$UID_IN_IMAGE" ]]; then
    pass "image runs as the numeric non-root user $user"
  else
    fail "image runs as a numeric non-root user" "Config.User is '$user'"
  fi

  local out
  if out=$(podman run --rm --network none --read-only --cap-drop=ALL "$IMAGE" \
      validate --config /etc/impulse/impulse.toml 2>&1); then
    pass "the image's own /etc/impulse/impulse.toml validates"
  else
    fail "the image's own config validates" "$out"
  fi

  # --- the main container: tini as PID 1 ---
  local name=$RUN_ID listen admin
  listen=$(free_port)
  admin=$(free_port)
  run_container "$name" "$listen" "$admin" "$IMAGE"
  if poll 30 http_ok "http://127.0.0.1:$admin/healthz"; then
    pass "/healthz answers 200 (read-only, --cap-drop=ALL, uid $UID_IN_IMAGE)"
  else
    fail "/healthz answers 200" "$(container_log "$name")"
    summary
  fi
  if poll 10 http_ok "http://127.0.0.1:$admin/readyz"; then
    pass "/readyz answers 200"
  else
    fail "/readyz answers 200" "$(container_log "$name")"
  fi

  local body
  body=$(curl -s -m 10 -X POST "http://127.0.0.1:$listen/hello" -d '{"name": "smoke"}' || true)
  if [[ $body == *'Hello from Impulse!'* && $body == *smoke* ]]; then
    pass "POST /hello invokes the example function (a process function) and returns its answer"
  else
    fail "POST /hello returns the example function's answer" "got: $body" "$(container_log "$name")"
  fi

  local metrics
  metrics=$(curl -s -m 5 "http://127.0.0.1:$admin/metrics" || true)
  if grep -q '^impulse_invocations_total{.*function="hello".*outcome="success".*} 1$' <<<"$metrics"; then
    pass "/metrics counts the invocation"
  else
    fail "/metrics counts the invocation" "$(grep impulse_invocations_total <<<"$metrics" || echo 'no impulse_invocations_total')"
  fi

  if out=$(podman exec "$name" /bin/sh -c 'test -d /var/lib/impulse/impulse-data && touch /var/lib/impulse/impulse-data/.smoke && ! touch /etc/impulse/x 2>/dev/null && ! touch /usr/local/bin/x 2>/dev/null' 2>&1); then
    pass "the queue's data dir is on the writable volume; config and root filesystem are read-only"
  else
    fail "the data dir is writable and the rest read-only" "$out"
  fi

  local ps
  ps=$(processes "$name")
  if [[ -n $ps ]] && awk -v uid="$UID_IN_IMAGE" '$1 != uid { bad = 1 } END { exit bad }' <<<"$ps"; then
    pass "every process in the container runs as uid $UID_IN_IMAGE"
  else
    fail "every process runs as uid $UID_IN_IMAGE" "$ps"
  fi
  if awk '$2 == 1 && $5 == "tini" { ok = 1 } END { exit !ok }' <<<"$ps"; then
    pass "PID 1 is tini"
  else
    fail "PID 1 is tini" "$ps"
  fi

  body=$(curl -s -m 10 -X POST "http://127.0.0.1:$listen/forker" -d '{}' || true)
  if [[ $body == *'Hello from Impulse!'* ]] && poll 10 reaped "$name" sleep; then
    pass "the orphaned grandchild of a process function is reaped: no zombie"
  else
    fail "the orphaned grandchild of a process function is reaped" "invocation: $body" "$(processes "$name")"
  fi

  local started code
  started=$SECONDS
  podman stop -t "$STOP_TIMEOUT" "$name" >/dev/null 2>&1 || true
  code=$(podman inspect --format '{{.State.ExitCode}}' "$name" 2>/dev/null || echo '?')
  if [[ $code == 0 ]] && ((SECONDS - started < STOP_TIMEOUT)); then
    pass "podman stop: SIGTERM, drained, exit 0 in $((SECONDS - started))s (< ${STOP_TIMEOUT}s)"
  else
    fail "podman stop exits 0 within ${STOP_TIMEOUT}s" "exit code $code after $((SECONDS - started))s" "$(container_log "$name")"
  fi

  # --- the control: impulse itself as PID 1, no init ---
  # Shows that the zombie check above can fail: the same orphan, without tini, stays a zombie.
  name=$RUN_ID-no-init
  listen=$(free_port)
  admin=$(free_port)
  run_container "$name" "$listen" "$admin" --entrypoint /usr/local/bin/impulse "$IMAGE" \
    run --config /etc/impulse/impulse.toml
  if poll 30 http_ok "http://127.0.0.1:$admin/readyz"; then
    body=$(curl -s -m 10 -X POST "http://127.0.0.1:$listen/forker" -d '{}' || true)
    if [[ $body == *'Hello from Impulse!'* ]] && poll 10 has_zombie "$name"; then
      pass "control: without tini the same orphan stays a zombie (so the check above can fail)"
    else
      fail "control: without tini a zombie appears" "invocation: $body" "$(processes "$name")"
    fi
  else
    fail "control container becomes ready" "$(container_log "$name")"
  fi
  summary
}

summary() {
  log "container smoke: $PASSED passed, $FAILED failed"
  ((FAILED == 0)) || exit 1
  exit 0
}

main "$@"
