# Sourced by the scripts that run the zapstream_server example.
# `start_zapstream_server LOG COMMAND...` runs COMMAND (the example, with
# `env` settings before it) in the background, logging to LOG, waits
# until it listens, and sets ZAPSTREAM_PID and ZAPSTREAM_URL.

# shellcheck source=scripts/servers.sh
source "$(dirname "${BASH_SOURCE[0]}")/servers.sh"

start_zapstream_server() {
  local log=$1
  shift
  "$@" > "$log" 2>&1 &
  ZAPSTREAM_PID=$!
  if ! wait_ready zapstream_server "$ZAPSTREAM_PID" "$log" 30 grep -q '^Listening on ' "$log"; then
    kill "$ZAPSTREAM_PID" 2>/dev/null || true
    return 1
  fi
  ZAPSTREAM_URL="$(sed -n 's/^Listening on //p' "$log")"
}
