#!/bin/bash
# Grades Postern's cache with the http-tests/cache-tests RFC 9111 suite, in
# reverse-proxy and forward-proxy mode (docs/caching.md, "Conformance").
#
#   SUITE=/path/to/cache-tests POSTERN=target/release/postern scripts/cache-conformance/run.sh [reverse|forward|both]
#
# SUITE is a checkout of https://github.com/http-tests/cache-tests whose
# origin server listens on 127.0.0.1 (npm install done). Only loopback is used:
# the suite's origin on 127.0.0.1:8000, Postern on 127.0.0.1:28601 (reverse)
# and 127.0.0.1:28602 (forward). Results go to $OUT (default target/cache-conformance).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
MODE=${1:-both}
SUITE=${SUITE:?set SUITE to a cache-tests checkout}
POSTERN=$(realpath "${POSTERN:-target/release/postern}")
OUT=$(realpath -m "${OUT:-target/cache-conformance}")
mkdir -p "$OUT"
cp "$HERE/preload.mjs" "$HERE/summarize.mjs" "$SUITE/" 
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; }
trap cleanup EXIT

( cd "$SUITE" && exec env npm_package_config_port=8000 npm_package_config_protocol=http \
    npm_package_config_pidfile="$OUT/server.pid" node test-engine/server/server.mjs ) > "$OUT/server.log" 2>&1 &
PIDS+=($!)

wait_port() { # a bounded wait for a listener
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2; return 1
}
wait_port 8000 || exit 1

grade() { # $1 = mode, rest = environment for the suite's CLI
  local mode=$1; shift
  "$POSTERN" check -c "$HERE/$mode.toml" || exit 1
  "$POSTERN" -c "$HERE/$mode.toml" > "$OUT/postern-$mode.out" 2>&1 &
  PIDS+=($!)
  wait_port $([ "$mode" = reverse ] && echo 28601 || echo 28602) || exit 1
  ( cd "$SUITE" && env "$@" npm_package_config_id= node --no-warnings --import ./preload.mjs \
      test-engine/cli.mjs ) > "$OUT/results-$mode.json" 2> "$OUT/cli-$mode.err"
  ( cd "$SUITE" && node summarize.mjs "$OUT/results-$mode.json" --list ) > "$OUT/summary-$mode.txt"
  head -6 "$OUT/summary-$mode.txt"
}

case $MODE in reverse|both) grade reverse npm_package_config_base=http://127.0.0.1:28601 ;; esac
case $MODE in forward|both) grade forward npm_package_config_base=http://127.0.0.1:8000 CT_PROXY=http://127.0.0.1:28602 ;; esac
