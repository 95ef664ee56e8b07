#!/usr/bin/env bash
# The main job, end to end on this machine: a real Kafka broker, the topics, a local webhook
# receiver, `consent-webhooks run` on deploy/local/demo-config.toml, the sample records of
# deploy/sample-records.jsonl produced to the input topic, and the webhooks arriving.
set -euo pipefail
cd "$(dirname "$0")/.."

kafka=deploy/local/kafka.sh
work="$(mktemp -d)"
receiver_pid=""; service_pid=""; started_kafka=""
cleanup() {
  [ -n "$service_pid" ] && kill -TERM "$service_pid" 2>/dev/null && wait "$service_pid" 2>/dev/null || true
  [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null || true
  [ -n "$started_kafka" ] && "$kafka" stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> building consent-webhooks"
cargo build --quiet
bin=target/debug/consent-webhooks

echo "==> starting Kafka (KRaft, from the Maven Central jars)"
"$kafka" status >/dev/null 2>&1 || started_kafka=yes
bootstrap="$("$kafka" start | tail -n 1)"
for topic in consent.changes:3 consent.webhooks.dead-letter:1 consent.changes.rejected:1; do
  "$kafka" topics --bootstrap-server "$bootstrap" --create --if-not-exists \
    --topic "${topic%:*}" --partitions "${topic#*:}" --replication-factor 1 >/dev/null
done

echo "==> starting a webhook receiver on 127.0.0.1:8085"
python3 deploy/local/receiver.py 8085 > "$work/receiver.log" &
receiver_pid=$!

echo "==> checking the configuration"
export DEMO_SIGNING_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
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
"$kafka" console-producer --bootstrap-server "$bootstrap" --topic consent.changes \
  --reader-property parse.key=true --reader-property key.separator='|' < "$work/keyed.txt"

expected="$("$bin" derive deploy/sample-records.jsonl | wc -l)"
echo "==> waiting for $expected webhooks ($(wc -l < deploy/sample-records.jsonl) records; the rest are suppressed by the rules)"
deadline=$((SECONDS + 60))
while [ "$(grep -c '^webhook received' "$work/receiver.log" || true)" -lt "$expected" ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "timed out; service log:" >&2; cat "$work/service.log" >&2; exit 1
  fi
  sleep 0.2
done
cat "$work/receiver.log"
echo "==> a few of the service's metrics (http://127.0.0.1:9464/metrics)"
python3 - <<'PY'
import urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=5).read().decode()
for line in text.splitlines():
    if line.startswith(("consent_webhooks_records_consumed_total", "consent_webhooks_events_suppressed_total",
                        "consent_webhooks_deliveries_total")) and not line.endswith(" 0"):
        print("   ", line)
PY
echo "==> all $expected webhooks delivered; stopping (SIGTERM: drain, commit, exit)"
kill -TERM "$service_pid"; wait "$service_pid"; service_pid=""
