#!/usr/bin/env bash
# Runs the zapstream_server example as a user would: starts it on a free
# port of 127.0.0.1, posts and lists an event over HTTP, then stops it
# with SIGTERM by its PID and checks it shut down gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/zapinbox/target}"
cargo build --quiet --example zapstream_server
log="$CARGO_TARGET_DIR/zapstream_server.out"
# shellcheck source=scripts/zapstream.sh
source scripts/zapstream.sh
# The defaults (the dev key), whatever the caller's environment says.
start_zapstream_server "$log" env -u API_KEYS -u ZAPINBOX_BACKEND -u DATABASE_URL \
  PORT=0 ZAPINBOX_DB="$(mktemp -d)/zapstream.db" "$CARGO_TARGET_DIR/debug/examples/zapstream_server"
pid=$ZAPSTREAM_PID url=$ZAPSTREAM_URL
trap 'kill "$pid" 2>/dev/null || true' EXIT

python3 - "$url" <<'PY'
import json, sys, urllib.request
url = sys.argv[1]
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"X-API-Key": "dev_key_123"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)
created = call("POST", "/events", {"topic": "smoke", "payload": {"hello": 1}})
listed = call("GET", "/inbox?topic=smoke")
assert listed["events"][0]["id"] == created["id"], listed
assert call("GET", "/health")["status"] == "healthy"
print(f"zapstream_server: posted and listed {created['id']}")
PY

kill -TERM "$pid"
wait "$pid"
trap - EXIT
grep -q '^Stopped.$' "$log" || { cat "$log"; echo "no graceful stop" >&2; exit 1; }
echo "zapstream_server: stopped gracefully"
