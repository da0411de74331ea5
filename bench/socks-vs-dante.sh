#!/usr/bin/env bash
# SOCKS5 against Dante (dante-server), one core each, in one run: bulk MiB/s
# through one tunnel per 100 MiB transfer (curl --socks5), and new tunnels per
# second (crates/postern-testkit/examples/socks_rate.rs, CONNECT + GET /1k +
# close, 50 in flight). Origin (nginx) and load on CPU 0, proxies on CPU 1.
#
#   cargo build --release && cargo build --release --example socks_rate -p postern-testkit
#   bench/socks-vs-dante.sh            # REPEATS=5 DURATION=5 by default
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${REPEATS:-5}
SECONDS_PER_RUN=${DURATION:-5}
RUN=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$RUN"' EXIT
ORIGIN=127.0.0.1:28580 POSTERN=127.0.0.1:28581 DANTE=127.0.0.1:28582

mkdir -p "$RUN/www" "$RUN/tmp"
head -c 1024 /dev/zero > "$RUN/www/1k"
head -c $((100 << 20)) /dev/zero > "$RUN/www/100m"
chmod -R a+rX "$RUN"   # nginx's worker runs as an unprivileged user
cat > "$RUN/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $RUN/nginx.pid; error_log $RUN/nginx.err warn;
events { worker_connections 8192; }
http { access_log off; sendfile on; keepalive_timeout 65;
  client_body_temp_path $RUN/tmp; proxy_temp_path $RUN/tmp; fastcgi_temp_path $RUN/tmp;
  uwsgi_temp_path $RUN/tmp; scgi_temp_path $RUN/tmp;
  server { listen $ORIGIN backlog=4096; root $RUN/www; } }
CONF
taskset -c 0 nginx -c "$RUN/nginx.conf" &
cat > "$RUN/postern.toml" <<CONF
workers = 1
[[listener]]
name = "socks"
bind = "$POSTERN"
mode = "socks5"
[egress]
allow_private_destinations = true
[log]
access = "off"
CONF
taskset -c 1 target/release/postern -c "$RUN/postern.toml" 2>"$RUN/postern.err" &
cat > "$RUN/danted.conf" <<CONF
logoutput: $RUN/danted.log
internal: 127.0.0.1 port = ${DANTE##*:}
external: 127.0.0.1
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
CONF
taskset -c 1 danted -f "$RUN/danted.conf" -N 1 &
for p in ${ORIGIN##*:} ${POSTERN##*:} ${DANTE##*:}; do
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.05; done
done

curl -s -o /dev/null -w 'origin check: %{http_code} %{size_download}\n' "http://$ORIGIN/100m" >&2
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
bulk() { # proxy-url or "direct"; curl on the load CPU with the origin, as the harness pins it
  for _ in $(seq "$REPEATS"); do
    if [ "$1" = direct ]; then
      taskset -c 0 curl -s -o /dev/null -w '%{speed_download}\n' "http://$ORIGIN/100m"
    else
      taskset -c 0 curl -s -o /dev/null -w '%{speed_download}\n' --socks5 "$1" "http://$ORIGIN/100m"
    fi
  done | awk '{printf "%.0f\n", $1 / 1048576}' | median
}
rate() {
  for _ in $(seq "$REPEATS"); do
    taskset -c 0 target/release/examples/socks_rate "$1" "$ORIGIN" /1k 50 "$SECONDS_PER_RUN" | awk '{print $1}'
  done | median
}
echo "| target | bulk MiB/s (median of $REPEATS) | new tunnels/s (median of $REPEATS × ${SECONDS_PER_RUN} s) |"
echo "|---|---|---|"
echo "| direct | $(bulk direct) | – |"
echo "| dante | $(bulk "$DANTE") | $(rate "$DANTE") |"
echo "| postern | $(bulk "$POSTERN") | $(rate "$POSTERN") |"
