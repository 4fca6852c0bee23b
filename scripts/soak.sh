#!/usr/bin/env bash
# A soak of `ttmem serve` under churning workloads: simulated processes of every profile start,
# run for a random while and end (the crash profile dies by SIGKILL, leaving its region behind),
# about WORKERS at a time, for DURATION seconds. Every INTERVAL seconds one CSV row records the
# daemon's resident memory, its CPU over the interval, and what its API reports.
#
#   scripts/soak.sh [DURATION_S (3600)] [WORKERS (8)] [INTERVAL_S (10)]
#
# Writes target/soak/soak-<time>.csv and prints a summary. Not part of CI (an hour). Needs curl
# and python3 besides what scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-3600}
workers=${2:-8}
interval=${3:-10}

cargo build --release --quiet -p ttmem-cli
ttmem=$PWD/target/release/ttmem
work=$(mktemp -d /tmp/ttmem-soak.XXXXXX)
mkdir -p target/soak
csv=target/soak/soak-$(date +%Y%m%dT%H%M%S).csv
export TTMEM_DIR=$work/regions
socket=$work/api.sock

cleanup() {
    if [ -n "${spawner:-}" ]; then
        pkill -TERM -P "$spawner" 2>/dev/null || true
        kill "$spawner" 2>/dev/null || true
    fi
    [ -n "${daemon:-}" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$ttmem" serve --no-http --no-legacy-socket --no-tt-metal --api-socket "$socket" \
    --db "$work/ttmem.db" 2>"$work/serve.log" &
daemon=$!
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done

api() { curl -s --max-time 5 --unix-socket "$socket" "http://ttmem$1"; }

# The churn: keep about $workers workloads running, each for 5 to 60 s.
(
    profiles=(llm-inference training leaky bursty crash)
    shapes=(n150 n300 p150 t3000)
    while true; do
        if [ "$(jobs -rp | wc -l)" -lt "$workers" ]; then
            p=${profiles[RANDOM % ${#profiles[@]}]}
            s=${shapes[RANDOM % ${#shapes[@]}]}
            "$ttmem" sim run -p "$p" -s "$s" --duration $((5 + RANDOM % 56)) \
                --crash-after $((3 + RANDOM % 20)) --seed $RANDOM >/dev/null 2>&1 &
        fi
        sleep 0.5
    done
) 2>/dev/null &
spawner=$!

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
echo "elapsed_s,rss_mib,cpu_pct,processes,running,events,events_lost,live_allocations,history_points" >"$csv"
start=$(date +%s)
last_ticks=$(cpu_ticks)
last_t=$start
while [ $(( $(date +%s) - start )) -lt "$duration" ]; do
    sleep "$interval"
    now=$(date +%s)
    ticks=$(cpu_ticks)
    cpu=$(awk -v d=$((ticks - last_ticks)) -v t=$((now - last_t)) -v hz="$hz" 'BEGIN { printf "%.1f", d * 100 / hz / (t > 0 ? t : 1) }')
    last_ticks=$ticks
    last_t=$now
    rss=$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$daemon/status")
    api /api/v1/stats >"$work/stats.json" || echo '{}' >"$work/stats.json"
    api /api/v1/processes >"$work/processes.json" || echo '{}' >"$work/processes.json"
    api /api/v1/health >"$work/health.json" || echo '{}' >"$work/health.json"
    row=$(python3 - "$work/stats.json" "$work/processes.json" "$work/health.json" <<'EOF'
import json, sys
def load(path):
    try:
        return json.load(open(path))
    except ValueError:
        return {}
s, p, h = (load(a) for a in sys.argv[1:4])
c = s.get("collector", {})
ps = p.get("processes", [])
print(",".join(str(x) for x in [
    len(ps), sum(1 for x in ps if x.get("state") == "running"),
    c.get("events", 0), c.get("events_lost", 0), s.get("live_allocations", 0),
    h.get("history_points", 0)]))
EOF
)
    echo "$((now - start)),$rss,$cpu,$row" | tee -a "$csv"
done

python3 - "$csv" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
rss = [float(r["rss_mib"]) for r in rows]
cpu = [float(r["cpu_pct"]) for r in rows]
q = len(rows) // 4 or 1
print(f"\n{len(rows)} samples in {sys.argv[1]}")
print(f"daemon RSS MiB: first {rss[0]:.1f}, median of last quarter {statistics.median(rss[-q:]):.1f}, max {max(rss):.1f}")
print(f"daemon CPU %: median {statistics.median(cpu):.1f}, max {max(cpu):.1f}")
print(f"events {rows[-1]['events']}, lost {rows[-1]['events_lost']}, processes known at the end {rows[-1]['processes']}")
EOF
