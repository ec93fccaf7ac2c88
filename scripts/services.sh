#!/usr/bin/env bash
# Runs the real services the Impulse integration tests need, as local processes on 127.0.0.1
# (no Docker): Redis (6379), Prometheus (9090) and a single-node Apache Kafka 4.x broker in KRaft
# mode (PLAINTEXT 9092, CONTROLLER 9093) built from Maven Central jars.
#
#   scripts/services.sh up|down|status [kafka|redis|prometheus ...]   (no names: all three)
#
#   up      installs what is missing (Debian packages; Kafka's jars through scripts/kafka/pom.xml),
#           starts what is not running, waits until each answers, prints where it listens.
#           Idempotent: a running service is only reported.
#   down    stops the instances this script started (pid files); fine when nothing runs.
#   status  prints each service's state; exits non-zero if any requested one is not up.
#
# Environment:
#   IMPULSE_SERVICES_DIR    state (pids, logs, data); default <repo>/.services (gitignored)
#   IMPULSE_SERVICES_CACHE  Kafka's jars, reused across runs and checkouts;
#                           default ~/.cache/impulse-services (kafka-<version>/libs)
#   IMPULSE_SERVICES_TIMEOUT seconds to wait for Kafka to answer (default 90; Redis and
#                           Prometheus get 30)
#
# Prometheus scrapes job `impulse` from the file_sd file <state>/prometheus/targets.json
# (reset to [] on start, re-read every second): tests register an impulse admin address by
# writing [{"targets": ["127.0.0.1:PORT"]}] there (see tests/prometheus.yml).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${IMPULSE_SERVICES_DIR:-$ROOT/.services}
CACHE=${IMPULSE_SERVICES_CACHE:-${HOME:-/root}/.cache/impulse-services}
KAFKA_TIMEOUT=${IMPULSE_SERVICES_TIMEOUT:-90}
ALL_SERVICES=(kafka redis prometheus)

HOST=127.0.0.1
REDIS_PORT=6379
PROM_PORT=9090
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093

KAFKA_POM=$ROOT/scripts/kafka/pom.xml
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")
KAFKA_LIBS=$CACHE/kafka-$KAFKA_VERSION/libs

log() { printf '%s\n' "$*"; }
err() { printf 'services.sh: %s\n' "$*" >&2; }
die() { err "$*"; exit 1; }

usage() {
  echo "usage: scripts/services.sh up|down|status [kafka|redis|prometheus ...]" >&2
  exit 2
}

# --- processes -------------------------------------------------------------------------------

# pid_file NAME / log_file NAME
pid_file() { printf '%s/%s/%s.pid' "$STATE" "$1" "$1"; }
log_file() { printf '%s/%s/%s.log' "$STATE" "$1" "$1"; }

# The command line a live process of ours must contain (guards against a recycled pid).
cmd_marker() {
  case $1 in
    redis) echo redis-server ;;
    prometheus) echo prometheus ;;
    kafka) echo kafka.Kafka ;;
  esac
}

# Prints the pid of our running instance of NAME, or fails.
running_pid() {
  local f pid
  f=$(pid_file "$1")
  [[ -s $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$(cmd_marker "$1")" || return 1
  echo "$pid"
}

# True while the pid recorded for NAME is alive (whatever it runs).
pid_alive() {
  local f
  f=$(pid_file "$1")
  [[ -s $f ]] && kill -0 "$(<"$f")" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Refuses to start when something that is not ours already holds one of our ports.
check_ports_free() {
  local name=$1 port
  shift
  for port in "$@"; do
    if port_open "$port"; then
      err "$name: $HOST:$port is already in use by another process:"
      ss -ltnp "sport = :$port" 2>/dev/null | tail -n +2 >&2 || true
      die "$name: stop it (or run 'scripts/services.sh down') and retry"
    fi
  done
}

# Stops pid $2 of service $1: TERM, then KILL after 20 s.
stop_pid() {
  local name=$1 pid=$2 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  err "$name: pid $pid ignored SIGTERM for 20 s, killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

fail_start() {
  local name=$1 why=$2 pid
  err "$name: $why"
  err "--- last lines of $(log_file "$name") ---"
  tail -n 40 "$(log_file "$name")" >&2 2>/dev/null || true
  if pid_alive "$name"; then stop_pid "$name" "$(<"$(pid_file "$name")")"; fi
  rm -f "$(pid_file "$name")"
  exit 1
}

# wait_ready NAME TIMEOUT_S: polls NAME's probe until it answers, failing early if it dies.
wait_ready() {
  local name=$1 timeout=$2 deadline
  deadline=$((SECONDS + timeout))
  while ! "probe_$name"; do
    pid_alive "$name" || fail_start "$name" "exited while starting"
    ((SECONDS < deadline)) || fail_start "$name" "not ready after ${timeout}s"
    sleep 0.25
  done
}

# --- installation ----------------------------------------------------------------------------

APT_UPDATED=
apt_install() {
  local sudo=
  [[ $(id -u) == 0 ]] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  if [[ -z $APT_UPDATED ]]; then
    log "installing: $* (apt-get update first)"
    $sudo apt-get update -qq
    APT_UPDATED=1
  else
    log "installing: $*"
  fi
  # --no-install-recommends: prometheus would otherwise bring prometheus-node-exporter too.
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Debian's packages start their own instance on install (unless policy-rc.d forbids it) and on
# boot: stop and disable those so ours are the ones on our ports. Handles systemd, SysV
# `service`, and neither (a stray daemon run by the package's user is stopped by pid).
stop_distro_service() {
  local unit=$1 user=$2 exe=$3 pid
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    systemctl disable --now "$unit" >/dev/null 2>&1 || true
  elif command -v service >/dev/null && [[ -x /etc/init.d/$unit ]]; then
    service "$unit" stop >/dev/null 2>&1 || true
    if command -v update-rc.d >/dev/null; then
      update-rc.d "$unit" disable >/dev/null 2>&1 || true
    fi
  fi
  if id "$user" >/dev/null 2>&1; then
    for pid in $(pgrep -u "$user" -x "$exe" 2>/dev/null || true); do
      err "stopping $exe pid $pid started by the Debian package"
      stop_pid "$exe" "$pid"
    done
  fi
}

ensure_installed() {
  local want_redis=$1 want_prom=$2 want_kafka=$3 pkgs=() need_kcat=
  if [[ $want_redis ]] && ! command -v redis-server >/dev/null; then pkgs+=(redis-server); fi
  if [[ $want_redis ]] && ! command -v redis-cli >/dev/null; then pkgs+=(redis-tools); fi
  if [[ $want_prom ]] && ! command -v prometheus >/dev/null; then pkgs+=(prometheus); fi
  if [[ $want_prom ]] && ! command -v curl >/dev/null; then pkgs+=(curl); fi
  if [[ $want_kafka ]]; then
    command -v java >/dev/null || pkgs+=(openjdk-17-jre-headless)
    if [[ ! -f $KAFKA_LIBS/.complete ]] && ! command -v mvn >/dev/null; then pkgs+=(maven); fi
    command -v kcat >/dev/null || need_kcat=1
  fi
  if ((${#pkgs[@]})); then
    apt_install "${pkgs[@]}"
    if [[ " ${pkgs[*]} " == *" redis-server "* ]]; then
      stop_distro_service redis-server redis redis-server
    fi
    if [[ " ${pkgs[*]} " == *" prometheus "* ]]; then
      stop_distro_service prometheus prometheus prometheus
      stop_distro_service prometheus-node-exporter prometheus prometheus-node-exporter
    fi
  fi
  # kcat is optional (readiness then falls back to the broker's own "started" log line).
  if [[ $need_kcat ]]; then
    apt_install kcat || err "kcat did not install; Kafka readiness falls back to its log"
  fi
}

# Copies Kafka's runtime classpath from Maven Central once per pom.xml content.
ensure_kafka_libs() {
  local stamp tmp
  stamp=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  if [[ -f $KAFKA_LIBS/.complete && $(<"$KAFKA_LIBS/.complete") == "$stamp" ]]; then
    return
  fi
  log "kafka: fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS"
  mkdir -p "$(dirname "$KAFKA_LIBS")"
  tmp=$(mktemp -d "$(dirname "$KAFKA_LIBS")/libs.tmp.XXXXXX")
  if ! mvn -B -q -f "$KAFKA_POM" dependency:copy-dependencies \
      -DoutputDirectory="$tmp" -DincludeScope=runtime; then
    rm -rf "$tmp"
    die "kafka: mvn could not fetch the jars listed in $KAFKA_POM"
  fi
  echo "$stamp" >"$tmp/.complete"
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
}

# --- probes (true when the service answers) --------------------------------------------------

probe_redis() {
  [[ $(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

probe_prometheus() {
  curl -sf -m 2 "http://$HOST:$PROM_PORT/-/ready" >/dev/null 2>&1
}

probe_kafka() {
  port_open "$KAFKA_PORT" || return 1
  if command -v kcat >/dev/null; then
    # A metadata request that lists our broker.
    timeout 10 kcat -b "$HOST:$KAFKA_PORT" -L -m 5 2>/dev/null | grep -q '1 brokers:'
  else
    grep -q 'Kafka Server started' "$(log_file kafka)" 2>/dev/null
  fi
}

# --- start -----------------------------------------------------------------------------------

start_redis() {
  local dir=$STATE/redis logf
  logf=$(log_file redis)
  mkdir -p "$dir"
  check_ports_free redis "$REDIS_PORT"
  : >"$logf"
  # Errors before daemonizing (bad arguments) go to stderr, the rest to --logfile.
  redis-server --daemonize yes --bind "$HOST" --port "$REDIS_PORT" \
    --save "" --appendonly no \
    --dir "$dir" --logfile "$logf" --pidfile "$(pid_file redis)" \
    >/dev/null 2>"$dir/redis.stderr" 9>&- || {
    cat "$dir/redis.stderr" >>"$logf"
    fail_start redis "redis-server did not start"
  }
  # The daemon writes its pid file just after forking.
  local i
  for ((i = 0; i < 50; i++)); do
    running_pid redis >/dev/null && break
    sleep 0.1
  done
  wait_ready redis 30
}

# Launches "$@" detached (own session, survives this shell), appending to NAME's log and
# recording its pid.
launch() {
  local name=$1
  shift
  # Not a process-group leader here (no job control), so setsid execs in place and $! is the
  # service's own pid.
  nohup setsid "$@" >>"$(log_file "$name")" 2>&1 </dev/null 9>&- &
  echo $! >"$(pid_file "$name")"
  # Until the exec chain (nohup, setsid) reaches the service, running_pid cannot match it.
  local i
  for ((i = 0; i < 50; i++)); do
    running_pid "$name" >/dev/null && return
    pid_alive "$name" || return 0
    sleep 0.1
  done
}

start_prometheus() {
  local dir=$STATE/prometheus config=$ROOT/tests/prometheus.yml
  mkdir -p "$dir/data"
  check_ports_free prometheus "$PROM_PORT"
  echo '[]' >"$dir/targets.json"
  if [[ $STATE != "$ROOT/.services" ]]; then
    # The config names ../.services/prometheus/targets.json relative to itself; run a copy that
    # names this state dir's file instead.
    sed "s#- \.\./\.services/prometheus/targets\.json#- $dir/targets.json#" "$config" \
      >"$dir/prometheus.yml"
    config=$dir/prometheus.yml
  fi
  promtool check config "$config" >"$(log_file prometheus)" 2>&1 ||
    fail_start prometheus "promtool rejects $config"
  launch prometheus prometheus \
    --config.file="$config" \
    --web.listen-address="$HOST:$PROM_PORT" \
    --storage.tsdb.path="$dir/data" \
    --storage.tsdb.retention.time=1d
  wait_ready prometheus 30
}

write_kafka_config() {
  local dir=$1
  cat >"$dir/server.properties" <<EOF
# Written by scripts/services.sh: single-node KRaft broker+controller for tests, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
EOF
  # Kafka 4.x logs through log4j2; without a config it would print errors only.
  cat >"$dir/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.controller.name = org.apache.kafka.controller
logger.controller.level = info
EOF
}

start_kafka() {
  local dir=$STATE/kafka cp cid
  mkdir -p "$dir/data" "$dir/logs"
  check_ports_free kafka "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
  ensure_kafka_libs
  write_kafka_config "$dir"
  cp="$KAFKA_LIBS/*"
  local jvm=(-Djava.awt.headless=true -Dkafka.logs.dir="$dir/logs"
    -Dlog4j2.configurationFile="$dir/log4j2.properties")
  if [[ ! -s $dir/cluster.id ]]; then
    java "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool random-uuid >"$dir/cluster.id.tmp" 2>/dev/null ||
      die "kafka: StorageTool random-uuid failed"
    mv "$dir/cluster.id.tmp" "$dir/cluster.id"
  fi
  cid=$(<"$dir/cluster.id")
  : >"$(log_file kafka)"
  java "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool format --standalone --ignore-formatted \
    -t "$cid" -c "$dir/server.properties" >>"$(log_file kafka)" 2>&1 ||
    fail_start kafka "formatting $dir/data failed (delete $dir to start afresh)"
  launch kafka java -Xms256m -Xmx768m -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError "${jvm[@]}" \
    -cp "$cp" kafka.Kafka "$dir/server.properties"
  wait_ready kafka "$KAFKA_TIMEOUT"
}

where() {
  case $1 in
    redis) echo "redis://$HOST:$REDIS_PORT" ;;
    prometheus) echo "http://$HOST:$PROM_PORT (scrape targets: $STATE/prometheus/targets.json)" ;;
    kafka) echo "$HOST:$KAFKA_PORT (controller $HOST:$KAFKA_CONTROLLER_PORT, Kafka $KAFKA_VERSION)" ;;
  esac
}

# --- commands --------------------------------------------------------------------------------

cmd_up() {
  local name pid t0 t
  local r='' p='' k=''
  for name in "$@"; do
    case $name in redis) r=1 ;; prometheus) p=1 ;; kafka) k=1 ;; esac
  done
  mkdir -p "$STATE"/{redis,prometheus,kafka}
  ensure_installed "$r" "$p" "$k"
  # Kafka last: it takes longest and is the heaviest on memory.
  for name in redis prometheus kafka; do
    [[ " $* " == *" $name "* ]] || continue
    t0=$SECONDS
    if pid=$(running_pid "$name"); then
      wait_ready "$name" 30
      log "$name: already running (pid $pid) at $(where "$name")"
    else
      rm -f "$(pid_file "$name")"
      "start_$name"
      t=$((SECONDS - t0))
      log "$name: started (pid $(running_pid "$name")) at $(where "$name") in ${t}s; log $(log_file "$name")"
    fi
  done
}

cmd_down() {
  local name pid
  for name in "$@"; do
    if pid=$(running_pid "$name"); then
      stop_pid "$name" "$pid"
      log "$name: stopped (pid $pid)"
    else
      log "$name: not running"
    fi
    rm -f "$(pid_file "$name")"
  done
}

cmd_status() {
  local name pid rc=0
  for name in "$@"; do
    if pid=$(running_pid "$name"); then
      if "probe_$name"; then
        log "$name: up (pid $pid) at $(where "$name")"
      else
        log "$name: running (pid $pid) but not answering at $(where "$name"); log $(log_file "$name")"
        rc=1
      fi
    else
      log "$name: down"
      rc=1
    fi
  done
  return "$rc"
}

main() {
  (($# >= 1)) || usage
  local cmd=$1 name
  shift
  (($#)) || set -- "${ALL_SERVICES[@]}"
  for name in "$@"; do
    case $name in kafka | redis | prometheus) ;; *) err "unknown service '$name'"; usage ;; esac
  done
  # One invocation at a time per state dir: a concurrent down must not remove the pid file of
  # an instance that an up is starting. (Services are started with fd 9 closed, so that they
  # do not hold the lock.)
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock 9
  case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    *) usage ;;
  esac
}

main "$@"
