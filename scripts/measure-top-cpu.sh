#!/usr/bin/env bash
# Measures ttmem top's CPU use at a 10 Hz refresh with 32 simulated chips and 100 processes:
# a daemon, 100 workload processes on the 32 chips of a simulated Galaxy, and ttmem top in a
# tmux terminal for SECONDS; CPU time comes from /proc/<pid>/stat. Needs tmux.
# Usage: scripts/measure-top-cpu.sh [SECONDS] [held|active] (builds the release binary first).
# held: the workloads hold still after their first step (nothing changes between refreshes);
# active: they keep allocating, so every refresh brings new numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
mode=${2:-held}
if [[ $mode == active ]]; then sim_args=(--step-ms 100); else sim_args=(--hold-after 1 --step-ms 1); fi
cargo build --release -q
ttmem=$PWD/target/release/ttmem
work=$(mktemp -d)
pids=()
cleanup() {
    tmux -L ttmem-measure kill-server 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
"$ttmem" serve --no-http --no-legacy-socket --dir "$work/regions" --api-socket "$work/api.sock" --db "$work/db" 2>/dev/null &
pids+=($!)
sleep 0.5
for i in $(seq 1 100); do
    TTMEM_DIR=$work/regions "$ttmem" sim run -p bursty -d galaxy "${sim_args[@]}" --seed "$i" >/dev/null &
    pids+=($!)
done
sleep 5
tmux -L ttmem-measure -f /dev/null new-session -d -s top -x 200 -y 60 "$ttmem top --api-socket $work/api.sock -r 100"
sleep 2
# The pane's process is ttmem itself, or a shell whose child it is.
pane_pid=$(tmux -L ttmem-measure display -p -t top '#{pane_pid}')
if [[ $(cat "/proc/$pane_pid/comm") == ttmem ]]; then top_pid=$pane_pid; else top_pid=$(pgrep -P "$pane_pid" -x ttmem); fi
echo "measuring pid $top_pid: $(tr '\0' ' ' < "/proc/$top_pid/cmdline")"
hz=$(getconf CLK_TCK)
t0=$(awk '{print $14 + $15}' "/proc/$top_pid/stat")
sleep "$seconds"
t1=$(awk '{print $14 + $15}' "/proc/$top_pid/stat")
devices=$(tmux -L ttmem-measure capture-pane -p -t top | head -1 | grep -o '[0-9]* devices')
procs=$(tmux -L ttmem-measure capture-pane -p -t top | head -1 | grep -o '[0-9]* processes')
awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$seconds" -v d="$devices" -v p="$procs" \
    -v m="$mode" 'BEGIN { printf "ttmem top at 10 Hz with %s and %s (%s): %.2f%% of one core over %d s\n", d, p, m, 100 * (b - a) / hz / s, s }'
