# Sourced by the scripts that start servers: `on_exit CMD` runs CMD when
# the script exits, the last added first, each seeing the script's exit
# status in $EXIT_STATUS. One EXIT trap serves them all (a second `trap`
# would replace the first).

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
