#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests against a real Apache Kafka broker
# (KRaft, from the Maven Central jars) started here and stopped on exit.
#
#   scripts/test.sh                 # all tests
#   scripts/test.sh --test pipeline # extra arguments go to `cargo test`
#
# KAFKA_BOOTSTRAP_SERVERS=host:port uses that broker instead of starting one.
set -euo pipefail
cd "$(dirname "$0")/.."

export KAFKA_PORT="${KAFKA_TEST_PORT:-39092}"
export KAFKA_CONTROLLER_PORT="$((KAFKA_PORT + 1))"
started=""
if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  if ! deploy/local/kafka.sh status >/dev/null 2>&1; then
    started=yes
  fi
  KAFKA_BOOTSTRAP_SERVERS="$(deploy/local/kafka.sh start | tail -n 1)"
  export KAFKA_BOOTSTRAP_SERVERS
  if [ -n "$started" ]; then
    trap 'deploy/local/kafka.sh stop >/dev/null 2>&1 || true' EXIT
  fi
fi
echo "test.sh: Kafka at $KAFKA_BOOTSTRAP_SERVERS" >&2

cargo test "$@"
