#!/bin/bash
# Reverse proxy with gzip: Postern (`compress = true`) against nginx
# (`gzip on`), same level, same page, same load. Requests per second, CPU
# per request of the proxy, and the bytes each sends per response.
#
#   bench/gzip.sh [BIN] [LEVEL] [SIZE]   # defaults: target/release/postern, 1, 16384
#
# Like the harness: proxy on CPU 1, wrk (50 connections, gzip accepted) and
# the origin (an nginx serving one HTML page) on CPU 0. Needs nginx and wrk.
# Everything stays on 127.0.0.1 (ports 28090, 28502, 28503).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../target/release/postern}
LEVEL=${2:-1}
SIZE=${3:-16384}
SECONDS_EACH=${SECONDS_EACH:-10}
. "$HERE/lib.sh"
OUT=$(mktemp -d)
chmod 755 "$OUT"   # the origin's workers run as nobody
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT

for p in 28090 28502 28503; do
  if listening $p; then echo "port $p is busy" >&2; exit 1; fi
done

# The page: numbered HTML lines, as compressible as a real page is.
mkdir -p "$OUT/www"
awk -v n="$SIZE" 'BEGIN { while (len < n) { s = sprintf("<p class=\"row\">line %d: the quick brown fox jumps over the lazy dog</p>\n", i++); printf "%s", s; len += length(s) } }' \
  | head -c "$SIZE" > "$OUT/www/page.html"

cat > "$OUT/origin.conf" <<EOF
daemon off;
worker_processes 1;
pid $OUT/origin.pid;
error_log $OUT/origin.err;
events { worker_connections 1024; }
http {
  access_log off;
  types { text/html html; }
  server { listen 127.0.0.1:28090 reuseport; root $OUT/www; keepalive_requests 1000000; }
}
EOF
taskset -c 0 nginx -c "$OUT/origin.conf" -e "$OUT/origin.err" &
wait_listening 28090 50

cat > "$OUT/postern.toml" <<EOF
workers = 1
[[listener]]
name = "web"
bind = "127.0.0.1:28502"
mode = "reverse"
[log]
access = "off"
[[pool]]
name = "origin"
servers = ["127.0.0.1:28090"]
[[route]]
listener = "web"
pool = "origin"
compress = true
[compression]
level = $LEVEL
EOF

cat > "$OUT/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $OUT/nginx.pid;
error_log $OUT/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  upstream origin { server 127.0.0.1:28090; keepalive 256; }
  server {
    listen 127.0.0.1:28503;
    keepalive_requests 1000000;
    gzip on;
    gzip_comp_level $LEVEL;
    gzip_min_length 256;
    gzip_proxied any;
    gzip_vary on;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF

# measure NAME PORT CMD...: one run; prints req/s, CPU µs per request, bytes per response.
measure() {
  local name=$1 port=$2; shift 2
  taskset -c 1 "$@" >/dev/null 2>"$OUT/$name.log" &
  local pid=$!
  wait_listening "$port" 50 || { cat "$OUT/$name.log" >&2; exit 1; }
  local size status
  read -r status size < <(curl -s -H 'Accept-Encoding: gzip' -o /dev/null \
    -w '%{http_code} %{size_download}\n' "http://127.0.0.1:$port/page.html")
  [ "$status" = 200 ] || { echo "$name answered $status" >&2; exit 1; }
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  taskset -c 0 wrk -t1 -c50 -d"${SECONDS_EACH}s" -H 'Accept-Encoding: gzip' \
    "http://127.0.0.1:$port/page.html" > "$OUT/$name.wrk"
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local total rate
  total=$(awk '/requests in/ {print $1}' "$OUT/$name.wrk")
  rate=$(awk '/Requests\/sec/ {print $2}' "$OUT/$name.wrk")
  awk -v n="$name" -v r="$rate" -v t="$total" -v c=$((u1 - u0 + s1 - s0)) -v hz="$(getconf CLK_TCK)" -v b="$size" \
    'BEGIN { printf "%-8s %10.0f req/s %8.1f µs/req %7d bytes/response\n", n, r, c / hz * 1e6 / t, b }'
}

echo "page $SIZE bytes, gzip level $LEVEL, ${SECONDS_EACH} s each"
for round in 1 2 3; do
  measure postern 28502 "$BIN" -c "$OUT/postern.toml"
  measure nginx 28503 nginx -c "$OUT/nginx.conf" -e "$OUT/nginx.err"
done
