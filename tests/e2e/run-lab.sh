#!/usr/bin/env bash
# `make e2e`: a fresh lab under a name of its own, the e2e suite against its kubeconfig, the lab
# removed whatever happens (also on failure or Ctrl-C), the suite's exit code returned. The report
# (JSON) is printed by the suite and written to ${KUBEWEFT_E2E_REPORT:-out/e2e-report.json}.
set -euo pipefail
cd "$(dirname "$0")/../.."
kubeweft=.venv/bin/kubeweft
name="e2e$$"                     # lab names: 1-20 lowercase letters and digits
nodes=${KUBEWEFT_E2E_NODES:-2}

# shellcheck disable=SC2317  # called by the EXIT trap
down() {
  local t=$SECONDS
  timeout 120 "$kubeweft" lab --name "$name" down >/dev/null 2>&1 || echo "e2e: lab $name: down failed" >&2
  echo "e2e: lab up ${up_s:-?} s, suite ${suite_s:-?} s, lab down $((SECONDS - t)) s"
}
trap down EXIT
trap 'exit 130' INT TERM

t=$SECONDS
timeout 300 "$kubeweft" lab --name "$name" up --nodes "$nodes"
up_s=$((SECONDS - t))
kubeconfig=$("$kubeweft" lab --name "$name" kubeconfig)
rc=0
t=$SECONDS
KUBECONFIG=$kubeconfig PATH="$PWD/.venv/bin:$PATH" \
  timeout 1200 .venv/bin/python -m pytest -p no:cacheprovider -q tests/e2e "$@" || rc=$?
suite_s=$((SECONDS - t))
exit "$rc"
