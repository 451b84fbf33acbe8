#!/usr/bin/env bash
# Runs every fuzz target of the module for a short time each (default 10s):
# `make fuzz-smoke` or scripts/fuzz-smoke.sh 30s. The seed corpora already
# run as ordinary tests in `make test`; this explores beyond them.
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-10s}"
grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u | while read -r dir; do
  for target in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/' | sort -u); do
    echo "== $dir $target ($budget)"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$budget" "$dir"
  done
done
