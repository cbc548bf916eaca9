# Sourced by the scripts that start servers. `on_exit CMD` runs CMD when
# the script exits, the last added first, each seeing the script's exit
# status in $EXIT_STATUS: one EXIT trap serves them all (a second `trap`
# would replace the first). `free_port`, `wait_ready` and `stop_server`
# find a port, wait for a server to be ready, and stop it by its PID.

declare -p ON_EXIT &>/dev/null || ON_EXIT=()

on_exit() {
  ON_EXIT+=("$1")
  trap run_on_exit EXIT
}

run_on_exit() {
  EXIT_STATUS=$?
  local i
  for ((i = ${#ON_EXIT[@]} - 1; i >= 0; i--)); do
    ${ON_EXIT[i]} || true
  done
  exit "$EXIT_STATUS"
}

# stop_server NAME PID LOG: SIGTERM, up to 10 s to exit (tansu takes a few
# seconds), then SIGKILL; prints the end of LOG if the script failed.
stop_server() {
  local name=$1 pid=$2 log=$3 status=${EXIT_STATUS:-0}
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [[ $status -ne 0 ]]; then
    echo "$name's last words:" >&2
    tail -n 20 "$log" >&2 || true
  fi
}

# listening PORT: whether something listens on 127.0.0.1:PORT.
listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port FROM: the first port from FROM that nothing listens on.
free_port() {
  local port=$1
  while listening "$port"; do
    port=$((port + 1))
  done
  echo "$port"
}

# wait_ready NAME PID LOG SECONDS CHECK...: waits until the command CHECK
# succeeds while PID runs; if PID exits first or SECONDS pass, prints LOG
# and fails.
wait_ready() {
  local name=$1 pid=$2 log=$3 seconds=$4
  shift 4
  for _ in $(seq 1 $((seconds * 10))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited at start:" >&2
      cat "$log" >&2
      return 1
    fi
    if "$@"; then
      return 0
    fi
    sleep 0.1
  done
  echo "$name was not ready within $seconds s:" >&2
  cat "$log" >&2
  return 1
}
