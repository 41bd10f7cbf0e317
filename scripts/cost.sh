#!/usr/bin/env bash
# make bench-cost: CPU-seconds per 1M decisions of `flowguard serve`, embedded
# (in-memory limiter, in-process learner) and in Redis mode (shared limiter;
# redis-server's CPU counted too), ML on in both, converted to dollars per
# request at a stated vCPU-hour price.
#
# CPU time is utime+stime from /proc/PID/stat before and after a load run;
# decisions are the change in flowguard_decisions_total over the same run.
# Each mode is measured twice: at a fixed rate (internal/loadtest/rate, open
# loop: an instance with headroom, as it runs in production) and saturated
# (wrk, closed loop). The load generator shares the machine but is not
# counted. Go's and fasthttp's per-request costs dominate, so the figure is
# stable to about ±15% between runs on a noisy 2-core machine.
#
#   COST_DURATION   (15s)   length of each load run
#   COST_RATE       (5000)  requests/s of the fixed-rate run
#   COST_CONNS      (64)    connections
#   COST_KEYS       (10000) distinct API keys
#   COST_VCPU_HOUR  (0.04)  $ per vCPU-hour: AWS c7g.large on demand is
#                           $0.0725/h for 2 vCPUs (us-east-1, 2024), $0.036;
#                           rounded up to $0.04
set -euo pipefail
cd "$(dirname "$0")/.."

DUR=${COST_DURATION:-15s}
RATE=${COST_RATE:-5000}
CONNS=${COST_CONNS:-64}
KEYS=${COST_KEYS:-10000}
PRICE=${COST_VCPU_HOUR:-0.04}
for tool in wrk redis-server curl python3; do
  command -v "$tool" >/dev/null || { echo "bench-cost needs $tool: apt-get install $tool" >&2; exit 1; }
done
[ -r /proc/self/stat ] || { echo "bench-cost reads CPU time from /proc/PID/stat (Linux only)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

go build -o "$work/flowguard" ./cmd/flowguard
go build -o "$work/rate" ./internal/loadtest/rate

# ML on, budgets large enough that every request is decided in full: the
# limiter on every request, stage 2 and a learner update once per key per
# epoch. A 10 s epoch re-chooses every key's multiplier about 1.5 times per
# run (15-20% of the fixed-rate requests run stage 2), six times as often as
# the default 60 s epoch: the figure is conservative.
cat >"$work/embedded.yaml" <<'EOF'
server: {reload_every: -1s, log_level: warn}
ml: {epoch: 10s}
policies:
  tiers:
    free: {rate: 60, period: 1m, burst: 20}
    enterprise: {rate: 500, period: 1s, burst: 500, floor: 1, ceiling: 4, ml: "on"}
  tenants:
    bench: {tier: enterprise}
EOF
sed 's/^ml:/redis: {addrs: ["127.0.0.1:16391"], timeout: 5ms}\nml:/' "$work/embedded.yaml" >"$work/redis.yaml"

wait_port() { # host:port
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1" >&2; exit 1
}
start() { # name addr cmd... → sets $last_pid
  local name=$1 addr=$2; shift 2
  "$@" >"$work/$name.log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
  wait_port "$addr"
}
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; pids=(); }

cpu_ticks() { # pid... → utime+stime summed, in clock ticks
  local total=0 p f
  for p in "$@"; do
    # Field 2 (comm) may hold spaces: split after its closing parenthesis,
    # so f[0] is field 3 and utime, stime (fields 14, 15) are f[11], f[12].
    read -ra f <<<"$(sed 's/.*) //' "/proc/$p/stat")"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}
decisions() { # base url → flowguard_decisions_total summed over its series
  curl -sf "$1/metrics" | awk '/^flowguard_decisions_total\{/ {s += $2} END {printf "%.0f", s}'
}

hz=$(getconf CLK_TCK)
rows=()
measure() { # mode load url flowguard-pid [redis-pid]
  local mode=$1 load=$2 url=$3 fg=$4 rs=${5:-}
  local base=${url%/v1/decide} c0 c1 r0=0 r1=0 d0 d1 t0 t1
  d0=$(decisions "$base"); c0=$(cpu_ticks "$fg"); [ -z "$rs" ] || r0=$(cpu_ticks "$rs"); t0=$(date +%s.%N)
  if [ "$load" = saturated ]; then
    FG_KEYS=$KEYS FG_TENANT=bench wrk -t1 -c"$CONNS" -d"$DUR" -s scripts/loadbench/decide.lua "$url" >"$work/wrk.txt"
    if grep -q "Non-2xx" "$work/wrk.txt"; then echo "non-2xx responses:" >&2; cat "$work/wrk.txt" >&2; exit 1; fi
  else
    "$work/rate" -url "$url" -rate "$RATE" -duration "$DUR" -conns "$CONNS" -keys "$KEYS" >"$work/rate.json"
  fi
  c1=$(cpu_ticks "$fg"); [ -z "$rs" ] || r1=$(cpu_ticks "$rs"); t1=$(date +%s.%N); d1=$(decisions "$base")
  rows+=("$mode $load $((d1 - d0)) $((c1 - c0)) $((r1 - r0)) $t0 $t1")
}

warm() { # url: fill the key tables and the first epoch's choices, unmeasured
  FG_KEYS=$KEYS FG_TENANT=bench wrk -t1 -c"$CONNS" -d3s -s scripts/loadbench/decide.lua "$1" >/dev/null
}

echo "== CPU per decision: /v1/decide, ML on, $KEYS keys, $CONNS connections, $DUR per run; \$$PRICE per vCPU-hour"

start embedded 127.0.0.1:18191 "$work/flowguard" serve --config "$work/embedded.yaml" --addr 127.0.0.1:18191
fg=$last_pid
warm http://127.0.0.1:18191/v1/decide
measure embedded "fixed-$RATE/s" http://127.0.0.1:18191/v1/decide "$fg"
measure embedded saturated http://127.0.0.1:18191/v1/decide "$fg"
stop_all

start redis-server 127.0.0.1:16391 redis-server --port 16391 --bind 127.0.0.1 --save "" --appendonly no
rs=$last_pid
start flowguard-redis 127.0.0.1:18192 "$work/flowguard" serve --config "$work/redis.yaml" --addr 127.0.0.1:18192
fg=$last_pid
warm http://127.0.0.1:18192/v1/decide
measure redis "fixed-$RATE/s" http://127.0.0.1:18192/v1/decide "$fg" "$rs"
measure redis saturated http://127.0.0.1:18192/v1/decide "$fg" "$rs"
stop_all

python3 - "$hz" "$PRICE" "${rows[@]}" <<'PY'
import sys
hz, price = float(sys.argv[1]), float(sys.argv[2])
target, budget = 1e-8, 5e-5
print(f"{'mode':<9} {'load':<12} {'decisions':>10} {'dec/s':>8} {'CPU-s':>7} {'redis':>6} {'cores':>6} {'CPU-s/1M':>9} {'$/request':>10} {'vs target':>10} {'under budget':>13}")
worst = 0.0
for row in sys.argv[3:]:
    mode, load, n, fg, rs, t0, t1 = row.split()
    rcpu = int(rs) / hz
    n, cpu, wall = int(n), (int(fg) + int(rs)) / hz, float(t1) - float(t0)
    if n <= 0:
        sys.exit(f"{mode} {load}: no decisions counted")
    per_m = cpu / n * 1e6
    usd = cpu / n / 3600 * price
    worst = max(worst, usd)
    print(f"{mode:<9} {load:<12} {n:>10} {n / wall:>8.0f} {cpu:>7.2f} {rcpu:>6.2f} {cpu / wall:>6.2f} {per_m:>9.1f} {usd:>10.2e} {usd / target:>9.3f}x {budget / usd:>12.0f}x")
print(f"CPU-s: flowguard's utime+stime plus, in Redis mode, redis-server's (the redis column); cores: CPU-s per wall second;")
print(f"CPU-s/1M: CPU-s per million decisions (flowguard_decisions_total). The load generator is not counted.")
print(f"$/request = CPU-s per decision / 3600 × ${price}/vCPU-hour. vs target: ÷ $0.00000001 (≤ 1 is met); under budget: $0.00005 ÷ $/request.")
print(f"target ≤ $0.00000001/request: {'met' if worst <= target else 'NOT met'} (worst {worst:.2e}, {budget / worst:.0f}x under the $0.00005 budget)")
PY
