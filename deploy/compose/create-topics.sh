#!/usr/bin/env bash
# docker-compose's one-shot topic creation (service kafka-init): every topic consent-webhooks
# uses, created if missing. Usage: create-topics.sh BOOTSTRAP
set -euo pipefail
bootstrap="$1"
topics=/opt/kafka/bin/kafka-topics.sh

# name partitions config...
create() {
  local name="$1" partitions="$2"; shift 2
  local configs=()
  for config in "$@"; do configs+=(--config "$config"); done
  "$topics" --bootstrap-server "$bootstrap" --create --if-not-exists --topic "$name" \
    --partitions "$partitions" --replication-factor 1 "${configs[@]}"
}

# Input; the retry topic has the same partition count (co-partitioned with the input).
create consent.changes 3
create consent.webhooks.retry 3 retention.ms=86400000
# Permanent store of undeliverable events: never deleted.
create consent.webhooks.dead-letter 1 retention.ms=-1
create consent.changes.rejected 1
# The organization registry ([registry]): one order of changes, latest per key, stamped by the
# broker.
create consent.webhooks.organizations 1 cleanup.policy=compact message.timestamp.type=LogAppendTime
"$topics" --bootstrap-server "$bootstrap" --list
