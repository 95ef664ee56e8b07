#!/usr/bin/env bash
# Writes base/prometheusrule.yaml from deploy/prometheus/alerts.yml, the one source of the alert
# rules: a rule file's `groups:` is a PrometheusRule's `spec`. With --check, writes nothing and
# exits 1 when the file is not what this script would write (tests/deploy_artifacts.rs).
set -euo pipefail
cd "$(dirname "$0")"
source_file=../prometheus/alerts.yml
target=base/prometheusrule.yaml

render() {
  cat <<'HEADER'
# GENERATED from deploy/prometheus/alerts.yml by deploy/kubernetes/generate-prometheusrule.sh:
# edit alerts.yml and run the script; tests/deploy_artifacts.rs fails while this is stale.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: consent-webhooks
spec:
HEADER
  # Drop the file's leading comment block, indent the rest under `spec:`.
  sed -e '1,/^[^#]/{/^#/d}' -e 's/^\(.\)/  \1/' "$source_file"
}

if [ "${1:-}" = "--check" ]; then
  if ! diff -u "$target" <(render) >&2; then
    echo "$target is stale: run deploy/kubernetes/generate-prometheusrule.sh" >&2
    exit 1
  fi
else
  render > "$target"
fi
