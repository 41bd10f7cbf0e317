#!/usr/bin/env bash
# make fuzz: run every native fuzz target for the given time each.
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:-10s}
# Minimising each new interesting input may take a minute by default (the
# counts stall meanwhile); a few seconds keeps a short run short.
minimize=${FUZZMINIMIZE:-5s}
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "== $pkg $target ($time)"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$time" -fuzzminimizetime "$minimize" "$pkg"
  done
done
