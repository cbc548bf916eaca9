# For the DynamoDB backend's tests (issue in progress; nothing sources it
# yet): starts DynamoDB Local (fetched once by install-dynamodb.sh) in
# memory on a free port, exports
# ZAPINBOX_DYNAMO_ENDPOINT, and stops it by its PID when the script exits.
# It has no bind-address option: it listens on every interface, and the
# tests talk to 127.0.0.1 only.

source "$(dirname "${BASH_SOURCE[0]}")/servers.sh"

start_dynamodb() {
  local dir port
  dir="$(./scripts/install-dynamodb.sh)" || return 1
  DYNAMODB_LOG="$(mktemp)"
  # The first free port from 18000.
  port=18000
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
  done
  (cd "$dir" && exec java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
    -port "$port" -inMemory -sharedDb -disableTelemetry) > "$DYNAMODB_LOG" 2>&1 &
  DYNAMODB_PID=$!
  on_exit stop_dynamodb
  # Ready when it listens (about 3 s here); still running first, so a
  # port taken meanwhile by another process is not mistaken for it.
  for _ in $(seq 1 300); do
    if kill -0 "$DYNAMODB_PID" 2>/dev/null && ! grep -q BindException "$DYNAMODB_LOG" &&
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      export ZAPINBOX_DYNAMO_ENDPOINT="http://127.0.0.1:$port"
      echo "DynamoDB Local listening on $ZAPINBOX_DYNAMO_ENDPOINT (pid $DYNAMODB_PID)"
      return 0
    fi
    if ! kill -0 "$DYNAMODB_PID" 2>/dev/null; then
      echo "DynamoDB Local exited at start:" >&2
      cat "$DYNAMODB_LOG" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "DynamoDB Local did not listen within 30 s:" >&2
  cat "$DYNAMODB_LOG" >&2
  return 1
}

stop_dynamodb() {
  if [[ -n "${DYNAMODB_PID:-}" ]]; then
    stop_server "DynamoDB Local" "$DYNAMODB_PID" "$DYNAMODB_LOG"
    rm -f "$DYNAMODB_LOG"
    DYNAMODB_PID=""
  fi
}
