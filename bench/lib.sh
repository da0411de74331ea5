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
