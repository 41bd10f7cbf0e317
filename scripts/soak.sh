#!/usr/bin/env bash
# soak: one `flowguard serve` (embedded default) at a fixed open-loop rate
# for SOAK_DURATION, sampling its RSS and Go heap every SOAK_SAMPLE, then a
# verdict on memory flatness: the mean of the last third of the samples
# against the first third (after the first sample, which is warm-up).
# RSS is judged by the thirds' means, the heap by their lows (the live heap
# after a collection), since the heap in use swings with the collector.
#   SOAK_DURATION (30m)  SOAK_RATE (2000/s)  SOAK_KEYS (100000)  SOAK_SAMPLE (60s)  SOAK_TOLERANCE (10%)
#   SOAK_CONFIG: the configuration to serve. Default: the embedded default
#   with ml.attribution_window 10m and ml.idle_ttl 5m, so that the state a
#   key holds by design (features for idle_ttl, the learner's records for
#   the window) reaches its steady state within the run: growth after that
#   is a leak. SOAK_WARMUP (10m, the window): samples before it are shown
#   but left out of the verdict, since the state fills by design until then.
set -euo pipefail
dur=${SOAK_DURATION:-30m}
rate=${SOAK_RATE:-2000}
keys=${SOAK_KEYS:-100000}
every=${SOAK_SAMPLE:-60s}
tol=${SOAK_TOLERANCE:-10}
warmup=${SOAK_WARMUP:-10m}
dir=$(mktemp -d)
go build -o "$dir/flowguard" ./cmd/flowguard
go build -o "$dir/rate" ./internal/loadtest/rate
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cfg=${SOAK_CONFIG:-}
if [ -z "$cfg" ]; then
  cfg="$dir/soak.yaml"
  sed 's/^ml: .*/ml:\n  attribution_window: 10m\n  idle_ttl: 5m/' examples/policies.yaml >"$cfg"
  sed -i "s#^  file: flowguard-audit.jsonl#  file: $dir/audit.jsonl#; s#^  stop_log: flowguard-stops.jsonl#  stop_log: $dir/stops.jsonl#" "$cfg"
fi
"$dir/flowguard" config validate "$cfg"
"$dir/flowguard" serve --config "$cfg" --addr "127.0.0.1:$port" 2>"$dir/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
"$dir/rate" -url "http://127.0.0.1:$port/v1/decide" -rate "$rate" -duration "$dur" -keys "$keys" -conns 32 >"$dir/rate.json" &
load=$!
secs() { python3 -c "import re,sys; v,u=re.fullmatch(r'([0-9.]+)(ms|s|m|h)','$1').groups(); print(int(float(v)*{'ms':.001,'s':1,'m':60,'h':3600}[u]))"; }
total=$(secs "$dur"); step=$(secs "$every"); skip=$(secs "$warmup")
printf '%-8s %10s %10s %12s\n' minute rss_mib heap_mib decisions
samples=()
t=0
while [ "$t" -lt "$total" ]; do
  sleep "$step"; t=$((t + step))
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  m=$(curl -sf "127.0.0.1:$port/metrics")
  heap=$(awk '/^flowguard_go_memstats_heap_inuse_bytes / {print $2}' <<<"$m")
  dec=$(awk '/^flowguard_decisions_total/ {s+=$2} END {printf "%d", s}' <<<"$m")
  printf '%-8s %10.1f %10.1f %12s\n' "$(python3 -c "print(round($t/60,1))")" "$(python3 -c "print($rss/1024)")" "$(python3 -c "print($heap/1048576)")" "$dec"
  if [ "$t" -gt "$skip" ]; then samples+=("$rss $heap"); fi
done
wait $load || true
python3 - "$tol" "${samples[@]}" <<'PY'
import sys, json
tol = float(sys.argv[1]); s = [tuple(map(float, x.split())) for x in sys.argv[2:]]
if len(s) < 3:
    print("verdict: too short to judge (fewer than 3 samples after the warm-up)"); sys.exit(1)
n = max(1, len(s) // 3)
# RSS by the thirds' means; the heap in use swings with the garbage
# collector, so by the thirds' lows, which track the live heap.
for i, name in ((0, "rss"), (1, "heap lows")):
    pick = (lambda xs: sum(xs) / len(xs)) if i == 0 else min
    first = pick([x[i] for x in s[:n]]); last = pick([x[i] for x in s[-n:]])
    print(f"{name}: first third {first/1024 if i==0 else first/1048576:.1f} MiB, last third {last/1024 if i==0 else last/1048576:.1f} MiB, change {100*(last-first)/first:+.1f}%")
    if last > first * (1 + tol/100):
        print(f"verdict: NOT FLAT ({name} grew more than {tol}%)"); sys.exit(1)
print(f"verdict: flat (within {tol}%)")
PY
python3 -c "import json; r=json.load(open('$dir/rate.json')); print(f\"load: {r['sent']} sent, {r['ok']} ok, {r['errors']} errors, {r['non_2xx']} non-2xx, p99 {r['p99_us']/1000:.1f} ms\")"
