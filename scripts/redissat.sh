#!/usr/bin/env bash
# Redis mode at saturation (issue 19): wrk -t2 -cCONNS for DUR over KEYS random
# keys against `flowguard serve` in Redis mode (examples/redis.yaml's redis
# settings) with a healthy redis-server on loopback; prints decisions, the
# fallbacks by reason and their share, and the breaker's opens.
#
#   SAT_DURATION (10s)  SAT_CONNS (64)  SAT_KEYS (10000)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${SAT_DURATION:-10s}
CONNS=${SAT_CONNS:-64}
KEYS=${SAT_KEYS:-10000}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
go build -o "$work/flowguard" ./cmd/flowguard
redis-server --port 16391 --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p 16391 ping >/dev/null 2>&1 && break; sleep 0.05; done
sed -e 's/127.0.0.1:6379/127.0.0.1:16391/' -e 's/":8080"/"127.0.0.1:18095"/' examples/redis.yaml >"$work/redis.yaml"
cat >>"$work/redis.yaml" <<'YAML'
  tenants:
    bench: {tier: enterprise}
YAML
"$work/flowguard" serve --config "$work/redis.yaml" >"$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/18095) 2>/dev/null && break; sleep 0.05; done
metrics() { curl -s http://127.0.0.1:18095/metrics | grep '^flowguard_fallback_decisions_total\|^flowguard_decision_duration_seconds_count\|^flowguard_limiter_circuit_opens_total' || true; }
metrics >"$work/m0"
FG_KEYS=$KEYS FG_TENANT=bench wrk -t2 -c"$CONNS" -d"$DUR" -s scripts/loadbench/decide-random.lua http://127.0.0.1:18095/v1/decide | grep -E 'Requests/sec|Latency|Non-2xx' || true
metrics >"$work/m1"
python3 - "$work/m0" "$work/m1" <<'PY'
import sys
def read(p):
    d = {}
    for line in open(p):
        name, v = line.rsplit(" ", 1)
        d[name] = float(v)
    return d
a, b = read(sys.argv[1]), read(sys.argv[2])
delta = {k: b[k] - a.get(k, 0) for k in b}
total = sum(v for k, v in delta.items() if k.startswith("flowguard_decision_duration_seconds_count"))
fb = {k.split('"')[1]: int(v) for k, v in delta.items() if k.startswith("flowguard_fallback_decisions_total")}
opens = sum(v for k, v in delta.items() if k.startswith("flowguard_limiter_circuit_opens_total"))
s = sum(fb.values())
print(f"decisions {int(total)}  fallbacks {s} ({100*s/max(total,1):.2f}%)  by reason {fb}  circuit opens {int(opens)}")
PY
