#!/usr/bin/env bash
# make bench-mem (issue 19): what a key costs `flowguard serve` in memory,
# from the process (internal/loadtest/memkeys):
#   1. the embedded default, MEM_KEYS (1,000,000) distinct keys through
#      /v1/decide/batch, read once every key's first epoch (60 s) has
#      closed into the learner: RSS and live heap per active key against
#      the 512 B target;
#   2. a burst of BURST_KEYS (2,000,000) new keys with 10 s epochs
#      (scripts/loadbench/burst.yaml): the decision log sheds or waits in
#      a counted way, and every decision the learner accepted gets its
#      outcome.
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${MEM_KEYS:-1000000}
BURST=${BURST_KEYS:-2000000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/flowguard" ./cmd/flowguard
go build -o "$work/memkeys" ./internal/loadtest/memkeys

echo "== memory per key: the embedded default, $KEYS keys"
"$work/memkeys" -bin "$work/flowguard" -keys "$KEYS" -outcomes 150s -heapprofile "$work/heap.prof" | tee "$work/mem.json"
echo "where the live heap is (go tool pprof -top, inuse_space):"
go tool pprof -sample_index=inuse_space -top -nodecount 12 "$work/flowguard" "$work/heap.prof" 2>/dev/null | sed -n '/flat%/,$p'

echo "== a burst of $BURST new keys, 10 s epochs: the decision log and the learner"
"$work/memkeys" -bin "$work/flowguard" -config scripts/loadbench/burst.yaml -keys "$BURST" -outcomes 180s | tee "$work/burst.json"

python3 - "$work/mem.json" "$work/burst.json" <<'PY'
import json, sys
m, b = (json.load(open(p)) for p in sys.argv[1:])
rss, heap = m["rss_per_key_bytes"], m["heap_per_key_bytes"]
print(f"target RSS per key <= 512 B at {m['keys']:,} keys: {'met' if rss <= 512 else 'NOT met'} "
      f"({rss:.0f} B RSS, {heap:.0f} B live heap per key; peak RSS {m['rss_peak_mb']:.0f} MiB)")
acc, out = b.get("learner_decisions", 0), b.get("learner_outcomes", 0)
print(f"burst of {b['keys']:,} keys: {b['decision_log_dropped']:.0f} decision-log records shed (counted), "
      f"{acc:.0f} decisions accepted, {out:.0f} outcomes received "
      f"({b.get('learner_orphan_outcomes', 0):.0f} of static or shadow epochs, or of decisions dropped unjoined), "
      f"{b.get('learner_pending_dropped', 0):.0f} dropped unjoined past the pending limit, "
      f"{b['feature_store_down_fallbacks']:.0f} decisions past ml.max_keys: "
      f"{'no accepted epoch lost' if out >= acc else f'{acc - out:.0f} accepted epochs without an outcome'}")
PY
