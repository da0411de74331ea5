# Shared by the bench scripts (sourced): ports, and the harness's origin.
RUN=${RUN_DIR:-/tmp/bench-run}

# Whether something listens on 127.0.0.1:PORT (awk reads all of ss's output,
# so no SIGPIPE can fail the pipeline under pipefail).
listening() { ss -ltn | awk -v p=":$1" '$4 ~ p"$" { f = 1 } END { exit !f }'; }

# wait_listening PORT [TENTHS]: waits up to TENTHS × 0.1 s (default 300).
wait_listening() {
  for _ in $(seq "${2:-300}"); do listening "$1" && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2
  return 1
}

# start_origin LOGDIR: the harness's origin on 28080/28081, started (from
# ../shared/bench's rendered configuration) when it is not running.
start_origin() {
  listening 28081 && return 0
  [ -f "$RUN/origin/nginx.conf" ] || { echo "run ../shared/bench once to render the origin" >&2; exit 1; }
  nginx -c "$RUN/origin/nginx.conf" -e "$1/origin.log" &
  wait_listening 28081 50
}

# proxy_under_test MODE BIN OUTDIR: sets PORT, CMD (the proxy's command) and
# URI (the absolute target for forward mode, else empty) for reverse, forward
# or nginx (the harness's nginx reverse proxy, as one process, so the
# process measured is the one doing the work); refuses a busy port.
proxy_under_test() {
  case $1 in
    reverse) PORT=28501; CMD=("$2" -c "$HERE/postern-reverse.toml"); URI= ;;
    forward) PORT=28500; CMD=("$2" -c "$HERE/postern-forward.toml"); URI=http://127.0.0.1:28080/1k ;;
    nginx)
      PORT=28210; URI=
      sed 's/^daemon off;/daemon off;\nmaster_process off;/' "$RUN/target-nginx/nginx.conf" > "$3/nginx.conf"
      CMD=(nginx -c "$3/nginx.conf" -e "$3/nginx.log") ;;
    *) echo "unknown mode $1" >&2; exit 2 ;;
  esac
  if listening "$PORT"; then
    echo "port $PORT is busy: stop what listens there first" >&2
    exit 1
  fi
}
