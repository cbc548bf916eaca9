# Sourced by test.sh: starts a tansu broker (a Kafka-compatible server,
# built once by install-tansu.sh) on 127.0.0.1 in a temporary directory,
# exports ZAPINBOX_TANSU_BROKERS, and stops it by its PID when the script
# exits. ZAPINBOX_TANSU_STORAGE picks another storage engine (default
# memory://tansu/; sqlite://tansu.db keeps it in the temporary directory).

source "$(dirname "${BASH_SOURCE[0]}")/servers.sh"

start_tansu() {
  local bin dir port
  bin="$(./scripts/install-tansu.sh)" || return 1
  dir="$(mktemp -d)"
  port="$(free_port 19092)"
  (cd "$dir" && exec "$bin" broker --cluster-id zapinbox \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "${ZAPINBOX_TANSU_STORAGE:-memory://tansu/}") > "$dir/tansu.log" 2>&1 &
  TANSU_PID=$!
  TANSU_DIR="$dir"
  on_exit stop_tansu
  wait_ready tansu "$TANSU_PID" "$dir/tansu.log" 60 grep -q "ready in" "$dir/tansu.log" || return 1
  export ZAPINBOX_TANSU_BROKERS="127.0.0.1:$port"
  echo "tansu $(basename "$(dirname "$(dirname "$bin")")") listening on $ZAPINBOX_TANSU_BROKERS (pid $TANSU_PID)"
}

stop_tansu() {
  if [[ -n "${TANSU_PID:-}" ]]; then
    stop_server tansu "$TANSU_PID" "$TANSU_DIR/tansu.log"
    rm -rf "$TANSU_DIR"
    TANSU_PID=""
  fi
}
