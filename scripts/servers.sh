# Sourced by the scripts that start servers. `on_exit CMD` runs CMD when
# the script exits, the last added first, each seeing the script's exit
# status in $EXIT_STATUS: one EXIT trap serves them all (a second `trap`
# would replace the first). `stop_server` stops one server by its PID.

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
