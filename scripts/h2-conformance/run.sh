#!/bin/bash
# Grades Postern's HTTP/2 server side with h2spec (docs/load-balancing.md,
# "HTTP/2 conformance"): a reverse listener over TLS, one with h2c beside
# HTTP/1.1, one with h2c = "only", and a forward listener over TLS.
#
#   H2SPEC=/path/to/h2spec POSTERN=target/release/postern scripts/h2-conformance/run.sh
#
# h2spec: https://github.com/summerwind/h2spec (`go install
# github.com/summerwind/h2spec/cmd/h2spec@latest`). Only loopback is used: an
# origin on 127.0.0.1:18080, Postern on 127.0.0.1:28701-28704. Each listener
# is graded twice, plain and strict (-S). Reports go to $OUT (default
# target/h2-conformance).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
H2SPEC=${H2SPEC:?set H2SPEC to an h2spec binary}
POSTERN=$(realpath "${POSTERN:-target/release/postern}")
OUT=$(realpath -m "${OUT:-target/h2-conformance}")
mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2> /dev/null || exit 1

cat > "$OUT/postern.toml" <<TOML
workers = 1

[[listener]]
name = "tls"
bind = "127.0.0.1:28701"
mode = "reverse"
tls = { cert = "cert.pem", key = "key.pem" }

[[listener]]
name = "h2c"
bind = "127.0.0.1:28702"
mode = "reverse"
h2c = true

[[listener]]
name = "h2c-only"
bind = "127.0.0.1:28703"
mode = "reverse"
h2c = "only"

[[listener]]
name = "forward-tls"
bind = "127.0.0.1:28704"
mode = "forward"
tls = { cert = "cert.pem", key = "key.pem" }

[egress]
allow_private_destinations = true

[log]
access = "$OUT/access.log"

[[pool]]
name = "app"
servers = ["127.0.0.1:18080"]

[[route]]
listener = "tls"
pool = "app"

[[route]]
listener = "h2c"
pool = "app"

[[route]]
listener = "h2c-only"
pool = "app"
TOML

python3 "$HERE/origin.py" 18080 > "$OUT/origin.log" 2>&1 &
PIDS+=($!)
"$POSTERN" check -c "$OUT/postern.toml" || exit 1
"$POSTERN" -c "$OUT/postern.toml" > "$OUT/postern.out" 2>&1 &
PIDS+=($!)

wait_port() { # a bounded wait for a listener
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2; return 1
}
for port in 18080 28701 28702 28703 28704; do wait_port $port || exit 1; done

grade() { # $1 = name, rest = h2spec arguments
  local name=$1; shift
  for strict in "" -S; do
    local report="$OUT/$name${strict:+-strict}"
    "$H2SPEC" "$@" -o 5 $strict -j "$report.xml" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' > "$report.txt"
    printf '%-22s %s\n' "$name${strict:+ (strict)}" "$(tail -1 "$report.txt")"
  done
}
grade reverse-tls  -h 127.0.0.1 -p 28701 -t -k
grade reverse-h2c  -h 127.0.0.1 -p 28702
grade h2c-only     -h 127.0.0.1 -p 28703
grade forward-tls  -h 127.0.0.1 -p 28704 -t -k
