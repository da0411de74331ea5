#!/bin/bash
# TCP segments on loopback per proxied request or tunnel, counted from the
# kernel's OutSegs (every segment of client, proxy and origin): a count that
# does not depend on how busy the machine is, unlike the CPU figures.
#
#   bench/segments.sh connect [BIN]   # CONNECT tunnels (the harness's connect-rate)
#   bench/segments.sh forward [BIN]   # forward-http, keep-alive
#   bench/segments.sh reverse [BIN]   # reverse-proxy, keep-alive
#
# Needs wrk, cc and nginx, and the harness's origin on 127.0.0.1:28080/28081
# (started here from ../shared/bench's rendered configuration when missing).
# Other traffic on loopback during the 3 s counts too: run it on a quiet machine.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
MODE=${1:?connect, forward or reverse}
BIN=${2:-$HERE/../target/release/postern}
. "$HERE/lib.sh"
SHARED=$HERE/../../shared/bench
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT

start_origin "$OUT"

case $MODE in
  connect|forward) PORT=28500; CONF=$HERE/postern-forward.toml ;;
  reverse) PORT=28501; CONF=$HERE/postern-reverse.toml ;;
  *) echo "unknown mode $MODE" >&2; exit 2 ;;
esac
listening "$PORT" && { echo "port $PORT is busy: stop what listens there first" >&2; exit 1; }
"$BIN" -c "$CONF" >"$OUT/postern.log" 2>&1 &
wait_listening "$PORT" || { cat "$OUT/postern.log" >&2; exit 1; }

out_segs() { awk '/^Tcp:/ && ++n == 2 { print $12 }' /proc/net/snmp; }
before=$(out_segs)
case $MODE in
  connect)
    rate=$OUT/connect-rate
    cc -O2 -o "$rate" "$SHARED/lib/connect-rate.c"
    "$rate" -x 127.0.0.1:$PORT -t 127.0.0.1:28080 -p /1k -e 1024 -c 50 -w 0 -d 3 >"$OUT/load.txt"
    done_count=$(sed -nE 's/^tunnels ok: ([0-9]+).*/\1/p' "$OUT/load.txt") || true ;;
  forward|reverse)
    export BENCH_ABS_URI=
    [ "$MODE" = forward ] && BENCH_ABS_URI=http://127.0.0.1:28080/1k
    wrk -t1 -c50 -d3s -s "$SHARED/lib/wrk.lua" "http://127.0.0.1:$PORT/1k" >"$OUT/load.txt"
    done_count=$(grep -o '"requests":[0-9]*' "$OUT/load.txt" | cut -d: -f2) || true ;;
esac
after=$(out_segs)
[ -n "$done_count" ] && [ "$done_count" -gt 0 ] || { echo "no load completed:" >&2; cat "$OUT/load.txt" >&2; exit 1; }
awk -v s=$((after - before)) -v n="$done_count" -v m="$MODE" \
  'BEGIN { printf "%s: %d done, %.2f TCP segments each\n", m, n, s / n }'
