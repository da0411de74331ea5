#!/bin/bash
# User-space instructions per proxied request, counted by callgrind: the
# noise-free companion of the harness's CPU µs/req (the machines are shared).
#
#   bench/instructions.sh reverse [BIN]   # Postern, reverse-proxy scenario
#   bench/instructions.sh forward [BIN]   # Postern, forward-http scenario
#   bench/instructions.sh nginx           # nginx reverse proxy, same work
#
# Needs valgrind, wrk and nginx, and the harness's origin running on
# 127.0.0.1:28080/28081 (it is started here from ../shared/bench's rendered
# configuration when missing). Everything stays on 127.0.0.1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
MODE=${1:?reverse, forward or nginx}
BIN=${2:-$HERE/../target/release/postern}
. "$HERE/lib.sh"
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT

start_origin "$OUT"

proxy_under_test "$MODE" "$BIN" "$OUT"
valgrind --tool=callgrind --callgrind-out-file="$OUT/cg" --instr-atstart=no "${CMD[@]}" \
  >/dev/null 2>"$OUT/valgrind.log" &
VG=$!
wait_listening "$PORT" 1200 || { cat "$OUT/valgrind.log" >&2; exit 1; }
export BENCH_ABS_URI=$URI
wrk -t1 -c10 -d2s -s /work/shared/bench/lib/wrk.lua "http://127.0.0.1:$PORT/1k" >/dev/null
callgrind_control -i on $VG >/dev/null 2>&1
wrk -t1 -c10 -d6s -s /work/shared/bench/lib/wrk.lua "http://127.0.0.1:$PORT/1k" > "$OUT/wrk.txt"
callgrind_control -i off $VG >/dev/null 2>&1
callgrind_control -d $VG >/dev/null 2>&1
requests=$(grep -o '"requests":[0-9]*' "$OUT/wrk.txt" | cut -d: -f2) || true
[ -n "$requests" ] && [ "$requests" -gt 0 ] || { echo "no load completed:" >&2; cat "$OUT/wrk.txt" >&2; exit 1; }
total=$(callgrind_annotate "$OUT"/cg.* 2>/dev/null | awk '/PROGRAM TOTALS/ && !n++ {gsub(",", "", $1); print $1}')
echo "$MODE: $requests requests, $((total / requests)) instructions/request"
