#!/bin/bash
# System calls, context switches and CPU time per proxied request, counted by
# the kernel (perf stat) while wrk drives the harness's reverse-proxy or
# forward-http load: what the proxy asks of the kernel, which is most of its
# CPU on these paths.
#
#   bench/syscalls.sh reverse [BIN]   # Postern, reverse-proxy scenario
#   bench/syscalls.sh forward [BIN]   # Postern, forward-http scenario
#   bench/syscalls.sh nginx           # nginx reverse proxy, same work
#
# Like the harness: proxy on CPU 1, wrk (50 connections) and origin on CPU 0.
# Needs root (syscall tracepoints), perf, wrk and nginx, and the harness's
# origin (started here when missing). Everything stays on 127.0.0.1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
MODE=${1:?reverse, forward or nginx}
BIN=${2:-$HERE/../target/release/postern}
. "$HERE/lib.sh"
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT

start_origin "$OUT"

proxy_under_test "$MODE" "$BIN" "$OUT"
taskset -c 1 "${CMD[@]}" >/dev/null 2>"$OUT/proxy.log" &
PROXY=$!
wait_listening "$PORT" || { cat "$OUT/proxy.log" >&2; exit 1; }
export BENCH_ABS_URI=$URI
taskset -c 0 wrk -t1 -c50 -d9s -s /work/shared/bench/lib/wrk.lua "http://127.0.0.1:$PORT/1k" > "$OUT/wrk.txt" &
LOAD=$!
sleep 2
events=syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read
events+=,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_write
events+=,context-switches,task-clock
# Requests the origin answered (its stub_status counter covers both of its
# ports): the requests proxied while perf watches.
served() { curl -s --max-time 2 http://127.0.0.1:28080/nginx_status | awk 'NR == 3 {print $3}'; }
# User and system CPU ticks of the proxy (fields 14 and 15 of its stat).
ticks() { awk '{print $14, $15}' "/proc/$PROXY/stat"; }
read -r u0 s0 < <(ticks)
before=$(served)
perf stat -x, -e "$events" -p "$PROXY" -o "$OUT/stat.csv" -- sleep 5
n=$(( $(served) - before - 1 ))
read -r u1 s1 < <(ticks)
wait $LOAD
rate=$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk.txt")
[ "$n" -gt 0 ] || { echo "no load completed:" >&2; cat "$OUT/wrk.txt" >&2; exit 1; }
echo "$MODE: $n requests in 5 s ($rate req/s over the whole run)"
awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) 'BEGIN {
  if (u + s > 0) printf "  %-28s %8.0f %%\n", "kernel share of CPU", 100 * s / (u + s) }' 
awk -F, -v n="$n" '
  $3 ~ /task-clock/ { printf "  %-28s %8.2f µs\n", "CPU per request", $1 * 1000 / n; next }
  $1 ~ /^[0-9.]+$/ { name = $3; sub(/syscalls:sys_enter_/, "", name); printf "  %-28s %8.3f\n", name " per request", $1 / n }
' "$OUT/stat.csv"
