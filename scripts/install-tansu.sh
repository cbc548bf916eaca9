#!/usr/bin/env bash
# Builds tansu, a Kafka-compatible broker from crates.io, once, into the
# cache ($HOME/.cache/zapinbox/tansu/bin/tansu). About 15 minutes on two
# cores the first time; nothing after. Prints the binary's path.
set -euo pipefail

CACHE="${ZAPINBOX_CACHE:-$HOME/.cache/zapinbox}"
VERSION="0.6.0"
ROOT="$CACHE/tansu-$VERSION"
BIN="$ROOT/bin/tansu"

if [[ ! -x "$BIN" ]]; then
  echo "building tansu $VERSION into $ROOT (once; about 15 minutes)" >&2
  # Its default features have no storage engine; libsql is its SQLite one.
  cargo install tansu --version "$VERSION" --locked \
    --no-default-features --features libsql,dynostore \
    --root "$ROOT" --target-dir "$CACHE/tansu-target" >&2
fi
echo "$BIN"
