#!/usr/bin/env bash
# Load benchmark of the zapstream_server example: POST /events and
# GET /inbox at 1 and 32 connections, with wrk (installed with apt-get if
# missing), on 127.0.0.1, each run bounded to a few seconds. Prints a
# Markdown table and writes it to docs/http-bench.md.
#
#   ./scripts/http-bench.sh                 # on SQLite, 10 s a run
#   SECONDS_PER_RUN=3 ./scripts/http-bench.sh
#   ZAPINBOX_BACKEND=kafka FEATURES=kafka ./scripts/http-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/zapinbox/target}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
FEATURES="${FEATURES:-sqlite}"
# shellcheck source=scripts/apt.sh
source scripts/apt.sh
command -v wrk >/dev/null || apt_install wrk

cargo build --quiet --release --features "$FEATURES" --example zapstream_server
work="$(mktemp -d)"
log="$work/server.out"
# shellcheck source=scripts/zapstream.sh
source scripts/zapstream.sh
start_zapstream_server "$log" env PORT=0 RATE_LIMIT_PER_MINUTE=0 API_KEYS="bench=bench" \
  ZAPINBOX_DB="$work/bench.db" "$CARGO_TARGET_DIR/release/examples/zapstream_server"
pid=$ZAPSTREAM_PID url=$ZAPSTREAM_URL
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
storage="$(sed -n 's/^Storage: //p' "$log")"
# The database lives in this run's temporary directory: say so, not where.
storage="${storage//$work/<temporary directory>}"

cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["X-API-Key"] = "bench"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"source":"bench","type":"order.created","topic":"orders","payload":{"order":42,"customer":"ACME","items":[{"sku":"A-1","qty":2}],"total":99.5}}'
LUA
cat > "$work/get.lua" <<'LUA'
wrk.headers["X-API-Key"] = "bench"
LUA

# "Requests/sec", p50 and p99 of one wrk run, as a table row.
run() {
  local name="$1" script="$2" path="$3" connections="$4" threads
  threads=$(( connections < 2 ? 1 : 2 ))
  wrk -t"$threads" -c"$connections" -d"${SECONDS_PER_RUN}s" --latency -s "$script" "$url$path" > "$work/wrk.out"
  if grep -q "Non-2xx" "$work/wrk.out"; then
    cat "$work/wrk.out" >&2
    echo "$name answered errors" >&2
    exit 1
  fi
  local rps p50 p99
  rps="$(awk '/^Requests\/sec/ {printf "%d", $2}' "$work/wrk.out")"
  [ -n "$rps" ] || { cat "$work/wrk.out" >&2; echo "$name: no rate from wrk" >&2; exit 1; }
  p50="$(awk '$1 == "50%" {print $2}' "$work/wrk.out")"
  p99="$(awk '$1 == "99%" {print $2}' "$work/wrk.out")"
  printf '| %s | %s | %s | %s | %s | %sx |\n' "$name" "$connections" "$rps" "$p50" "$p99" "$(( rps / 42 ))"
}

{
  echo "Storage: $storage; ${SECONDS_PER_RUN} s a run; wrk on 127.0.0.1; $(nproc) cores."
  echo
  echo "| Request | Connections | Requests/s | p50 | p99 | vs ZapStream (42/s) |"
  echo "|---|---|---|---|---|---|"
  run "POST /events" "$work/post.lua" /events 1
  run "POST /events" "$work/post.lua" /events 32
  run "GET /inbox" "$work/get.lua" /inbox 1
  run "GET /inbox" "$work/get.lua" /inbox 32
} | tee "$work/table.md"
mkdir -p docs
cp "$work/table.md" docs/http-bench.md

kill -TERM "$pid"
wait "$pid" || true
