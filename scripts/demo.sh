#!/usr/bin/env bash
# The main job, end to end on this machine: a real Kafka broker, the topics, a local webhook
# receiver that verifies every Standard Webhooks signature, `consent-webhooks run` on
# deploy/local/demo-config.toml, the sample records of deploy/sample-records.jsonl produced to
# the input topic, and the webhooks arriving. Exit 0 only when every expected webhook arrived
# and every signature verified.
#
# Kafka:
#   KAFKA_BOOTSTRAP_SERVERS=host:port  use that broker (topics and group unique to this run,
#                                      topics deleted at the end; the broker is left alone)
#   otherwise, a broker already running for KAFKA_PORT (default 9092, deploy/local/kafka.sh) is
#   used the same way; if there is none, the demo starts its own on KAFKA_PORT with a fresh data
#   directory and stops it at the end. It never stops a broker it did not start.
# CONSENT_WEBHOOKS_BIN=path            use that binary instead of `cargo build`.
# DEMO_TIMEOUT=seconds                 how long to wait for the webhooks (default 90).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

kafka=deploy/local/kafka.sh
export KAFKA_PORT="${KAFKA_PORT:-9092}"
export KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
work="$(mktemp -d)"
receiver_pid="" service_pid="" own_kafka_dir="" run_topics=""
cleanup() {
  set +e
  [ -n "$service_pid" ] && kill -TERM "$service_pid" 2>/dev/null && wait "$service_pid" 2>/dev/null
  [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null && wait "$receiver_pid" 2>/dev/null
  if [ -n "$run_topics" ]; then
    "$kafka" topics --bootstrap-server "$bootstrap" --delete --topic "$run_topics" >/dev/null 2>&1
  fi
  # Only the broker this run started: its own data directory holds its pid file.
  [ -n "$own_kafka_dir" ] && KAFKA_DATA_DIR="$own_kafka_dir" "$kafka" stop >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -n "${CONSENT_WEBHOOKS_BIN:-}" ]; then
  bin="$CONSENT_WEBHOOKS_BIN"
else
  echo "==> building consent-webhooks"
  cargo build --quiet
  bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/consent-webhooks"
fi

echo "==> preparing the receiver's Python environment (.venv-demo, standardwebhooks from PyPI)"
venv="$repo/.venv-demo"
(
  # Two demos at once (a test and a person) must not build the venv over each other.
  flock 9
  if ! "$venv/bin/python" -c 'import standardwebhooks' 2>/dev/null; then
    python3 -m venv "$venv" || {
      echo "python3 -m venv failed: install the venv module (Debian: apt-get install python3-venv)" >&2
      exit 1
    }
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'standardwebhooks==1.1.0'
  fi
) 9>"$repo/.venv-demo.lock"

if [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  bootstrap="$KAFKA_BOOTSTRAP_SERVERS"
  echo "==> using the Kafka broker at $bootstrap"
elif "$kafka" status >/dev/null 2>&1; then
  bootstrap="127.0.0.1:$KAFKA_PORT"
  echo "==> using the Kafka broker already running at $bootstrap"
else
  echo "==> starting Kafka on 127.0.0.1:$KAFKA_PORT (KRaft, from the Maven Central jars; stopped at the end)"
  own_kafka_dir="$work/kafka"
  bootstrap="$(KAFKA_DATA_DIR="$own_kafka_dir" "$kafka" start | tail -n 1)"
fi

# On a broker this run did not start, other runs may use the default names: take our own.
topics=(consent.changes consent.webhooks.dead-letter consent.changes.rejected consent.webhooks.retry)
if [ -z "$own_kafka_dir" ]; then
  run_id="demo-$(date +%s)-$$"
  topics=("${topics[@]/#/$run_id.}")
  run_topics="${run_id//./\\.}\\..*"
  export CONSENT_WEBHOOKS__KAFKA__GROUP_ID="consent-webhooks-$run_id"
fi
export CONSENT_WEBHOOKS__KAFKA__INPUT_TOPIC="${topics[0]}"
export CONSENT_WEBHOOKS__KAFKA__DEAD_LETTER_TOPIC="${topics[1]}"
export CONSENT_WEBHOOKS__KAFKA__REJECTED_TOPIC="${topics[2]}"
export CONSENT_WEBHOOKS__KAFKA__RETRY_TOPIC="${topics[3]}"
# The retry topic has as many partitions as the input topic.
partitions=(3 1 1 3)
for i in 0 1 2 3; do
  "$kafka" topics --bootstrap-server "$bootstrap" --create --if-not-exists \
    --topic "${topics[$i]}" --partitions "${partitions[$i]}" --replication-factor 1 >/dev/null
done
echo "    topics: ${topics[*]}"

echo "==> starting a webhook receiver that verifies signatures (deploy/local/receiver.py)"
orgs=(acme globex initech)
secret_args=()
for org in "${orgs[@]}"; do
  var="DEMO_$(tr '[:lower:]' '[:upper:]' <<<"$org")_SIGNING_SECRET"
  # A fresh Standard Webhooks secret per organization and run: whsec_ + base64 of 24 bytes.
  export "$var=whsec_$(head -c 24 /dev/urandom | base64)"
  secret_args+=(--secret "$org=$var")
done
"$venv/bin/python" deploy/local/receiver.py --port 0 --port-file "$work/receiver.port" \
  --log "$work/receiver.log" "${secret_args[@]}" 2> "$work/receiver.err" &
receiver_pid=$!
deadline=$((SECONDS + 30))
until [ -s "$work/receiver.port" ]; do
  if ! kill -0 "$receiver_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
    echo "the receiver did not start:" >&2; cat "$work/receiver.err" >&2; exit 1
  fi
  sleep 0.1
done
receiver_port="$(cat "$work/receiver.port")"
for org in "${orgs[@]}"; do
  export "CONSENT_WEBHOOKS__ORGANIZATIONS__$(tr '[:lower:]' '[:upper:]' <<<"$org")__URL=http://127.0.0.1:$receiver_port/$org"
done
echo "    listening on 127.0.0.1:$receiver_port"

metrics_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export CONSENT_WEBHOOKS__SERVER__LISTEN="127.0.0.1:$metrics_port"

echo "==> checking the configuration"
"$bin" check-config deploy/local/demo-config.toml --brokers "$bootstrap" > /dev/null

echo "==> running consent-webhooks"
"$bin" --log-format text run --config deploy/local/demo-config.toml --brokers "$bootstrap" 2> "$work/service.log" &
service_pid=$!

echo "==> producing deploy/sample-records.jsonl (key = organization/user)"
python3 - deploy/sample-records.jsonl > "$work/keyed.txt" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    e = r.get("after") or r.get("before")
    user = (e.get("user") or {}).get("id", e["id"])
    print(f"{r['organization_id']}/{user}|{line.strip()}")
PY
"$kafka" console-producer --bootstrap-server "$bootstrap" --topic "${topics[0]}" \
  --reader-property parse.key=true --reader-property key.separator='|' < "$work/keyed.txt"

stats() { curl -sf "http://127.0.0.1:$receiver_port/stats"; }
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
expected="$("$bin" derive deploy/sample-records.jsonl | wc -l)"
echo "==> waiting for $expected webhooks ($(wc -l < deploy/sample-records.jsonl) records; the rest are suppressed by the rules)"
deadline=$((SECONDS + ${DEMO_TIMEOUT:-90}))
while :; do
  now="$(stats)"
  [ "$(field "$now" distinct)" -ge "$expected" ] && break
  if ! kill -0 "$service_pid" 2>/dev/null; then
    echo "consent-webhooks exited; service log:" >&2; cat "$work/service.log" >&2; exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "timed out with $(field "$now" distinct) of $expected webhooks; receiver: $now; service log:" >&2
    cat "$work/service.log" >&2; exit 1
  fi
  sleep 0.2
done
cat "$work/receiver.log"

echo "==> a few of the service's metrics (http://127.0.0.1:$metrics_port/metrics)"
curl -sf "http://127.0.0.1:$metrics_port/metrics" | grep -E '^consent_webhooks_(records_consumed_total|events_suppressed_total|deliveries_total)' \
  | grep -v ' 0$' | sed 's/^/    /' || true

echo "==> stopping consent-webhooks (SIGTERM: drain, commit, exit)"
kill -TERM "$service_pid"; wait "$service_pid"; service_pid=""

# Anything that arrived while stopping (a duplicate) is counted too.
final="$(stats)"
delivered="$(field "$final" distinct)" verified="$(field "$final" verified)"
failed="$(field "$final" failed)" unchecked="$(field "$final" unchecked)" duplicates="$(field "$final" duplicates)"
echo "==> $delivered of $expected webhooks delivered, $verified verified, $failed failed, $unchecked unchecked, $duplicates duplicates"
if [ "$delivered" -ne "$expected" ] || [ "$verified" -ne "$((expected + duplicates))" ]; then
  echo "demo failed: every webhook must arrive once and carry a valid signature" >&2
  exit 1
fi
