#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, broker+controller in one JVM) without Docker.
# The broker and the CLI tools run from the jars on Maven Central (see pom.xml here).
# Usage: deploy/local/kafka.sh help
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"

JAVA="${JAVA:-java}"
MVN="${MVN:-mvn}"
KAFKA_HOME_DIR="${KAFKA_HOME_DIR:-$REPO_DIR/.kafka}"
LIBS_DIR="$KAFKA_HOME_DIR/libs"
STAMP_FILE="$LIBS_DIR/.fetched"
POM="$SCRIPT_DIR/pom.xml"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-$KAFKA_HOME_DIR/data-$KAFKA_PORT}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m}"
KAFKA_TOOLS_HEAP_OPTS="${KAFKA_TOOLS_HEAP_OPTS:--Xmx256m}"
# Optional SASL/SCRAM listener (off unless KAFKA_SASL_PORT is set): SASL_PLAINTEXT with
# SCRAM-SHA-512 on 127.0.0.1:$KAFKA_SASL_PORT, user KAFKA_SASL_USER with KAFKA_SASL_PASSWORD.
KAFKA_SASL_PORT="${KAFKA_SASL_PORT:-}"
KAFKA_SASL_USER="${KAFKA_SASL_USER:-consent-webhooks}"
KAFKA_SASL_PASSWORD="${KAFKA_SASL_PASSWORD:-}"

PID_FILE="$KAFKA_DATA_DIR/kafka.pid"
LOG_FILE="$KAFKA_DATA_DIR/broker.log"
PROPS_FILE="$KAFKA_DATA_DIR/server.properties"
MARKER_FILE="$KAFKA_DATA_DIR/.local-kafka"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

die() { echo "kafka.sh: error: $*" >&2; exit 1; }
info() { echo "kafka.sh: $*" >&2; }

usage() {
  cat <<EOF
Usage: $(basename "$0") COMMAND [ARGS...]

Broker lifecycle (one broker per KAFKA_PORT):
  fetch             download the Kafka jars into $LIBS_DIR (cached)
  start [--override k=v ...]
                    format storage if needed, start the broker in the background,
                    wait until it answers, print the bootstrap address (last line)
  stop              stop the broker (SIGTERM, then SIGKILL after ${KAFKA_STOP_TIMEOUT}s)
  status            exit 0 if the broker is running and answering
  reset             stop the broker and delete its data dir
  logs [N]          print the last N (default 50) lines of the broker log

Kafka CLI tools (all arguments are passed verbatim; give --bootstrap-server yourself):
  topics            org.apache.kafka.tools.TopicCommand
  consumer-groups   org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
  console-producer  org.apache.kafka.tools.ConsoleProducer
  console-consumer  org.apache.kafka.tools.consumer.ConsoleConsumer
  get-offsets       org.apache.kafka.tools.GetOffsetShell
  producer-perf-test, consumer-perf-test, metadata-quorum
  run CLASS ...     any other main class on the Kafka classpath

Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_DATA_DIR,
KAFKA_HOME_DIR, KAFKA_START_TIMEOUT (90), KAFKA_STOP_TIMEOUT (30), KAFKA_HEAP_OPTS,
KAFKA_TOOLS_HEAP_OPTS, KAFKA_JVM_OPTS, JAVA, MVN. See deploy/local/README.md.

SASL/SCRAM listener (start): KAFKA_SASL_PORT=PORT adds a SASL_PLAINTEXT listener with
SCRAM-SHA-512 on 127.0.0.1:PORT; user KAFKA_SASL_USER (consent-webhooks) with password
KAFKA_SASL_PASSWORD (required then). The PLAINTEXT listener stays as it is.
EOF
}

# ---------------------------------------------------------------- prerequisites

check_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "Java not found ('$JAVA'); install a JDK >= 17 or set JAVA=/path/to/java"
  local line ver major
  line="$("$JAVA" -version 2>&1 | head -n 1)" || true
  ver="$(sed -n 's/.*version "\([^"]*\)".*/\1/p' <<<"$line")"
  [[ -n "$ver" ]] || die "cannot determine the Java version from '$JAVA -version': $line"
  if [[ "$ver" == 1.* ]]; then major="${ver#1.}"; major="${major%%.*}"; else major="${ver%%[.+-]*}"; fi
  [[ "$major" =~ ^[0-9]+$ ]] || die "cannot parse the Java version '$ver'"
  (( major >= 17 )) || die "Kafka 4.x needs Java >= 17, but '$JAVA' is Java $ver; set JAVA=/path/to/java17+"
}

check_port_var() {
  local name="$1" val="$2"
  [[ "$val" =~ ^[0-9]+$ ]] && (( val > 0 && val < 65536 )) || die "$name must be a TCP port number, got '$val'"
}

# ---------------------------------------------------------------- fetch

pom_sum() { sha256sum "$POM" | cut -d' ' -f1; }

libs_ready() { [[ -f "$STAMP_FILE" && "$(cat "$STAMP_FILE")" == "$(pom_sum)" ]]; }

cmd_fetch() {
  libs_ready && return 0
  mkdir -p "$KAFKA_HOME_DIR"
  # Serialize concurrent fetches (e.g. two brokers started at once).
  exec 8>"$KAFKA_HOME_DIR/.fetch.lock"
  if command -v flock >/dev/null 2>&1; then flock 8; fi
  if libs_ready; then exec 8>&-; return 0; fi
  command -v "$MVN" >/dev/null 2>&1 || die "Maven not found ('$MVN'); it is needed once to download the Kafka jars (set MVN=/path/to/mvn)"
  check_java
  local tmp="$KAFKA_HOME_DIR/libs.tmp.$$" start=$SECONDS
  rm -rf "$tmp"
  info "downloading Kafka jars with Maven into $LIBS_DIR ..."
  # Output goes to a log shown only on failure (Maven 3.8 -q still prints stray
  # ANSI escapes).
  if ! "$MVN" -q -B -f "$POM" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" -DincludeScope=runtime >"$KAFKA_HOME_DIR/fetch.log" 2>&1; then
    rm -rf "$tmp"
    sed 's/\x1b\[[0-9;]*m//g' "$KAFKA_HOME_DIR/fetch.log" | tail -n 40 >&2
    die "mvn dependency:copy-dependencies failed (is Maven Central reachable?); full log: $KAFKA_HOME_DIR/fetch.log"
  fi
  pom_sum >"$tmp/.fetched"
  rm -rf "$LIBS_DIR"
  mv "$tmp" "$LIBS_DIR"
  exec 8>&-
  info "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS_DIR" | cut -f1)) in $((SECONDS - start))s"
}

# ---------------------------------------------------------------- probes

# True if the process exists and is not a zombie. A broker that dies while this
# script (its parent) is still waiting stays a zombie, and kill -0 would still succeed.
proc_alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  if [[ -r "/proc/$1/stat" ]]; then
    state="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
    [[ "$state" != Z ]] || return 1
  fi
  return 0
}

pid_alive() {
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  proc_alive "$pid" || return 1
  # Guard against a recycled pid: it must be our broker JVM.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Send a Kafka ApiVersions v0 request (api_key 18, correlation id 42) and check
# that the answer carries correlation id 42 and error code 0. Only a broker that
# has finished starting (request processing enabled) answers it.
broker_answers() {
  local got
  got="$(timeout 3 bash -c '
      exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
      printf "\x00\x00\x00\x0f\x00\x12\x00\x00\x00\x00\x00\x2a\x00\x05probe" >&3
      head -c 10 <&3 | od -An -tx1' _ "$1" 2>/dev/null)" || return 1
  got="$(tr -d ' \n' <<<"$got")"
  [[ "${got:8:12}" == "0000002a0000" ]]
}

# ---------------------------------------------------------------- start / stop

sasl_enabled() { [[ -n "$KAFKA_SASL_PORT" ]]; }

write_properties() {
  local listeners="PLAINTEXT://127.0.0.1:$KAFKA_PORT" protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if sasl_enabled; then
    listeners+=",SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT"
    protocols+=",SASL_PLAINTEXT:SASL_PLAINTEXT"
  fi
  cat >"$PROPS_FILE" <<EOF
# Written by deploy/local/kafka.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=$listeners,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=$listeners
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=$protocols
log.dirs=$KAFKA_DATA_DIR/logs
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
  if sasl_enabled; then
    cat >>"$PROPS_FILE" <<EOF
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
  fi
}

# The SCRAM credential, as StorageTool's --add-scram takes it.
scram_credential() { echo "SCRAM-SHA-512=[name=$KAFKA_SASL_USER,password=$KAFKA_SASL_PASSWORD]"; }

# Creates or updates the SCRAM user on the running broker (a data dir formatted without it).
ensure_scram_user() {
  local -a jopts
  mapfile -t jopts < <(tool_jvm_opts)
  "$JAVA" "${jopts[@]}" -cp "$LIBS_DIR/*" org.apache.kafka.tools.ConfigCommand \
    --bootstrap-server "$BOOTSTRAP" --alter --entity-type users --entity-name "$KAFKA_SASL_USER" \
    --add-config "SCRAM-SHA-512=[password=$KAFKA_SASL_PASSWORD]" >"$KAFKA_DATA_DIR/scram.log" 2>&1 \
    || { cat "$KAFKA_DATA_DIR/scram.log" >&2; return 1; }
}

# A Kafka cluster id is 16 random bytes in URL-safe base64 without padding.
new_cluster_id() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$id" != -* ]] && break   # Kafka avoids ids that look like a CLI flag
  done
  echo "$id"
}

broker_jvm_opts() {
  # shellcheck disable=SC2206
  local opts=($KAFKA_HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
    -Xshare:auto -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$SCRIPT_DIR/log4j2.yaml"
    "-Dkafka.logs.dir=$KAFKA_DATA_DIR" ${KAFKA_JVM_OPTS:-})
  printf '%s\n' "${opts[@]}"
}

tool_jvm_opts() {
  # shellcheck disable=SC2206
  local opts=($KAFKA_TOOLS_HEAP_OPTS -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto
    -Djava.awt.headless=true "-Dlog4j2.configurationFile=$SCRIPT_DIR/tools-log4j2.yaml"
    ${KAFKA_JVM_OPTS:-})
  printf '%s\n' "${opts[@]}"
}

print_log_tail() {
  local n="${1:-50}"
  if [[ -f "$LOG_FILE" ]]; then
    echo "----- last $n lines of $LOG_FILE -----" >&2
    tail -n "$n" "$LOG_FILE" >&2
    echo "-----" >&2
  else
    echo "(no broker log at $LOG_FILE)" >&2
  fi
}

stop_pid() {
  local pid="$1" deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
  kill -TERM "$pid" 2>/dev/null || true
  while proc_alive "$pid"; do
    if (( SECONDS >= deadline )); then
      info "broker (pid $pid) still running after ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
}

wait_ready() {
  local pid="$1" deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  while :; do
    if broker_answers "$KAFKA_PORT"; then return 0; fi
    if ! proc_alive "$pid"; then
      info "broker process $pid exited during startup"
      return 1
    fi
    if (( SECONDS >= deadline )); then
      info "broker not ready within ${KAFKA_START_TIMEOUT}s (KAFKA_START_TIMEOUT)"
      return 1
    fi
    sleep 0.25
  done
}

cmd_start() {
  local pid
  if pid="$(pid_alive)"; then
    if wait_ready "$pid"; then
      info "broker already running (pid $pid)"
      echo "$BOOTSTRAP"
      return 0
    fi
    print_log_tail 50
    die "broker process $pid exists but does not answer on $BOOTSTRAP"
  fi
  rm -f "$PID_FILE"

  check_java
  if sasl_enabled; then
    check_port_var KAFKA_SASL_PORT "$KAFKA_SASL_PORT"
    [[ -n "$KAFKA_SASL_PASSWORD" ]] || die "KAFKA_SASL_PORT is set: set KAFKA_SASL_PASSWORD too"
    port_open "$KAFKA_SASL_PORT" && die "SASL port $KAFKA_SASL_PORT is already in use (set KAFKA_SASL_PORT)"
  fi
  cmd_fetch
  port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is already in use by another process (set KAFKA_PORT)"
  port_open "$KAFKA_CONTROLLER_PORT" && die "controller port $KAFKA_CONTROLLER_PORT is already in use (set KAFKA_CONTROLLER_PORT)"

  if [[ -d "$KAFKA_DATA_DIR" && ! -f "$MARKER_FILE" && -n "$(ls -A "$KAFKA_DATA_DIR")" ]]; then
    die "$KAFKA_DATA_DIR is not empty and was not created by kafka.sh; refusing to use it"
  fi
  mkdir -p "$KAFKA_DATA_DIR"
  touch "$MARKER_FILE"
  write_properties

  local -a jopts
  mapfile -t jopts < <(broker_jvm_opts)
  local cp="$LIBS_DIR/*" t0=$SECONDS

  local formatted_now=""
  if [[ ! -f "$KAFKA_DATA_DIR/logs/meta.properties" ]]; then
    local cid
    local -a scram=()
    cid="$(new_cluster_id)"
    # The SCRAM user is written into the metadata log at format time (no broker needed).
    if sasl_enabled; then scram=(--add-scram "$(scram_credential)"); fi
    formatted_now=yes
    info "formatting $KAFKA_DATA_DIR/logs (cluster id $cid)"
    if ! "$JAVA" "${jopts[@]}" -cp "$cp" kafka.tools.StorageTool format \
          --config "$PROPS_FILE" --cluster-id "$cid" "${scram[@]}" >"$KAFKA_DATA_DIR/format.log" 2>&1; then
      cat "$KAFKA_DATA_DIR/format.log" >&2
      die "formatting the storage failed"
    fi
  fi

  [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
  info "starting broker on $BOOTSTRAP (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT, data $KAFKA_DATA_DIR)"
  # setsid: the broker gets its own session, so a Ctrl-C in the calling shell or the
  # end of a CI step's process group does not hit it; only 'stop' ends it.
  setsid "$JAVA" "${jopts[@]}" -cp "$cp" kafka.Kafka "$PROPS_FILE" "$@" \
    </dev/null >"$LOG_FILE" 2>&1 &
  pid=$!
  echo "$pid" >"$PID_FILE"

  if ! wait_ready "$pid"; then
    print_log_tail 50
    if proc_alive "$pid"; then stop_pid "$pid"; fi
    rm -f "$PID_FILE"
    die "broker failed to start"
  fi
  if sasl_enabled; then
    if [[ -z "$formatted_now" ]] && ! ensure_scram_user; then
      stop_pid "$pid"; rm -f "$PID_FILE"
      die "could not create the SCRAM user $KAFKA_SASL_USER"
    fi
    info "SASL/SCRAM-SHA-512 listener on 127.0.0.1:$KAFKA_SASL_PORT (user $KAFKA_SASL_USER)"
  fi
  info "broker ready (pid $pid) after $((SECONDS - t0))s"
  echo "$BOOTSTRAP"
}

cmd_stop() {
  local pid
  if pid="$(pid_alive)"; then
    info "stopping broker (pid $pid) on $BOOTSTRAP"
    stop_pid "$pid"
  else
    info "no broker running for $KAFKA_DATA_DIR"
  fi
  rm -f "$PID_FILE"
}

cmd_status() {
  local pid
  if pid="$(pid_alive)" && broker_answers "$KAFKA_PORT"; then
    echo "running: pid $pid, bootstrap $BOOTSTRAP, data $KAFKA_DATA_DIR"
    return 0
  fi
  if [[ -n "${pid:-}" ]]; then
    echo "not ready: pid $pid does not answer on $BOOTSTRAP"
  else
    echo "stopped: no broker for $KAFKA_DATA_DIR"
  fi
  return 1
}

cmd_reset() {
  cmd_stop
  [[ -d "$KAFKA_DATA_DIR" ]] || return 0
  [[ -f "$MARKER_FILE" ]] || die "$KAFKA_DATA_DIR was not created by kafka.sh; not deleting it"
  rm -rf "$KAFKA_DATA_DIR"
  info "deleted $KAFKA_DATA_DIR"
}

run_tool() {
  local class="$1"; shift
  check_java
  cmd_fetch
  local -a jopts
  mapfile -t jopts < <(tool_jvm_opts)
  exec "$JAVA" "${jopts[@]}" -cp "$LIBS_DIR/*" "$class" "$@"
}

# ---------------------------------------------------------------- main

main() {
  local cmd="${1:-help}"
  [[ $# -gt 0 ]] && shift
  check_port_var KAFKA_PORT "$KAFKA_PORT"
  check_port_var KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
  [[ "$KAFKA_PORT" != "$KAFKA_CONTROLLER_PORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"
  case "$cmd" in
    fetch) cmd_fetch ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    logs) print_log_tail "${1:-50}" 2>&1 ;;
    topics) run_tool org.apache.kafka.tools.TopicCommand "$@" ;;
    consumer-groups) run_tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand "$@" ;;
    console-producer) run_tool org.apache.kafka.tools.ConsoleProducer "$@" ;;
    console-consumer) run_tool org.apache.kafka.tools.consumer.ConsoleConsumer "$@" ;;
    get-offsets) run_tool org.apache.kafka.tools.GetOffsetShell "$@" ;;
    producer-perf-test) run_tool org.apache.kafka.tools.ProducerPerformance "$@" ;;
    consumer-perf-test) run_tool org.apache.kafka.tools.ConsumerPerformance "$@" ;;
    metadata-quorum) run_tool org.apache.kafka.tools.MetadataQuorumCommand "$@" ;;
    run) [[ $# -ge 1 ]] || die "usage: kafka.sh run MAIN_CLASS [ARGS...]"; run_tool "$@" ;;
    help|-h|--help) usage ;;
    *) usage >&2; die "unknown command '$cmd'" ;;
  esac
}

main "$@"
