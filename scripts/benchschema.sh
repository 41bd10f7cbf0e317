#!/usr/bin/env bash
# make bench-schema: feature schema v2 (issue 17) against v1, in one run.
# Builds the test binaries of the last v1 commit (SCHEMA_V1_COMMIT, in a
# temporary git worktree) and of this checkout, then runs each benchmark
# alternately, SCHEMA_ROUNDS times, and prints the medians and the ratio
# v2/v1 of throughputs (1.00 = as fast; above 0.90 is within the 10% the
# issue allows):
#
#   BenchmarkStage2          one stage-2 run: features, risk, bandit draw, record
#   BenchmarkDecidePipeline  one decision without HTTP, the request path
#   BenchmarkDecideHandler   the whole handler on an in-memory request
#
# bandit's BenchmarkChooseSchemaV2 times Choose at both dimensions in one
# process and prints its own ratio (make bench-go runs it).
set -euo pipefail
cd "$(dirname "$0")/.."

V1=${SCHEMA_V1_COMMIT:-f4f3a0b}
ROUNDS=${SCHEMA_ROUNDS:-5}
BT=${SCHEMA_BENCHTIME:-1s}
work=$(mktemp -d)
cleanup() { git worktree remove --force "$work/v1" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

git rev-parse --verify -q "$V1^{commit}" >/dev/null || { echo "bench-schema: commit $V1 is not in this clone (a shallow clone?)" >&2; exit 1; }
git worktree add -q --detach "$work/v1" "$V1"
for pkg in pipeline serving; do
  (cd "$work/v1" && go test -c -o "$work/v1-$pkg.test" "./$pkg")
  go test -c -o "$work/v2-$pkg.test" "./$pkg"
done

run() { # binary dir bench → ns/op
  (cd "$2" && "$1" -test.run '^$' -test.bench "^$3\$" -test.benchtime "$BT" -test.count 1) |
    awk -v b="$3" '$1 ~ "^"b"(-[0-9]+)?$" {print $3; exit}'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

printf '%-24s %12s %12s %8s\n' benchmark v1-ns/op v2-ns/op v2/v1
for spec in pipeline:Stage2 serving:DecidePipeline serving:DecideHandler; do
  pkg=${spec%%:*} bench=Benchmark${spec#*:}
  : >"$work/a"; : >"$work/b"
  for _ in $(seq "$ROUNDS"); do
    run "$work/v1-$pkg.test" "$work/v1/$pkg" "$bench" >>"$work/a"
    run "$work/v2-$pkg.test" "$PWD/$pkg" "$bench" >>"$work/b"
  done
  a=$(median <"$work/a") b=$(median <"$work/b")
  printf '%-24s %12.1f %12.1f %8.2f\n' "$bench" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN {print a / b}')"
done
