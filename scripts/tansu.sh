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
  # The first free port from 19092.
  port=19092
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
  done
  (cd "$dir" && exec "$bin" broker --cluster-id zapinbox \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "${ZAPINBOX_TANSU_STORAGE:-memory://tansu/}") > "$dir/tansu.log" 2>&1 &
  TANSU_PID=$!
  TANSU_DIR="$dir"
  on_exit stop_tansu
  for _ in $(seq 1 600); do
    if grep -q "ready in" "$dir/tansu.log"; then
      export ZAPINBOX_TANSU_BROKERS="127.0.0.1:$port"
      echo "tansu $(basename "$(dirname "$(dirname "$bin")")") listening on $ZAPINBOX_TANSU_BROKERS (pid $TANSU_PID)"
      return 0
    fi
    if ! kill -0 "$TANSU_PID" 2>/dev/null; then
      echo "tansu exited at start:" >&2
      cat "$dir/tansu.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "tansu did not say it was ready within 60 s:" >&2
  cat "$dir/tansu.log" >&2
  return 1
}

stop_tansu() {
  if [[ -n "${TANSU_PID:-}" ]]; then
    stop_server tansu "$TANSU_PID" "$TANSU_DIR/tansu.log"
    rm -rf "$TANSU_DIR"
    TANSU_PID=""
  fi
}
