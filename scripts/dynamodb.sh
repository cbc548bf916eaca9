# For the DynamoDB backend's tests: starts DynamoDB Local (fetched once by
# install-dynamodb.sh) in memory on a free port, exports
# ZAPINBOX_DYNAMO_ENDPOINT, and stops it by its PID when the script exits.
# It has no bind-address option: it listens on every interface, and the
# tests talk to 127.0.0.1 only.

source "$(dirname "${BASH_SOURCE[0]}")/servers.sh"

start_dynamodb() {
  local dir port
  dir="$(./scripts/install-dynamodb.sh)" || return 1
  DYNAMODB_LOG="$(mktemp)"
  port="$(free_port 18000)"
  (cd "$dir" && exec java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
    -port "$port" -inMemory -sharedDb -disableTelemetry) > "$DYNAMODB_LOG" 2>&1 &
  DYNAMODB_PID=$!
  on_exit stop_dynamodb
  # Ready when it listens (about 3 s here), and not because another
  # process took the port meanwhile.
  wait_ready "DynamoDB Local" "$DYNAMODB_PID" "$DYNAMODB_LOG" 30 dynamodb_listens "$port" || return 1
  export ZAPINBOX_DYNAMO_ENDPOINT="http://127.0.0.1:$port"
  echo "DynamoDB Local listening on $ZAPINBOX_DYNAMO_ENDPOINT (pid $DYNAMODB_PID)"
}

dynamodb_listens() {
  ! grep -q BindException "$DYNAMODB_LOG" && listening "$1"
}

stop_dynamodb() {
  if [[ -n "${DYNAMODB_PID:-}" ]]; then
    stop_server "DynamoDB Local" "$DYNAMODB_PID" "$DYNAMODB_LOG"
    rm -f "$DYNAMODB_LOG"
    DYNAMODB_PID=""
  fi
}
