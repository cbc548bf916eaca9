#!/usr/bin/env bash
# Fetches Amazon's DynamoDB Local once, from the npm package that ships it
# (amplify-dynamodb-simulator), into the cache, and makes sure Java runs
# (installing Java 17 with apt-get if not). Prints the directory holding
# DynamoDBLocal.jar.
set -euo pipefail

CACHE="${ZAPINBOX_CACHE:-$HOME/.cache/zapinbox}"
PACKAGE="amplify-dynamodb-simulator@2.9.30"   # DynamoDB Local 1.25.1
ROOT="$CACHE/dynamodb-local-2.9.30"
DIR="$ROOT/package/emulator"

# shellcheck source=scripts/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

if ! java -version >/dev/null 2>&1; then
  echo "installing Java 17 (DynamoDB Local runs on it)" >&2
  apt_install openjdk-17-jre-headless
fi
if [[ ! -f "$DIR/DynamoDBLocal.jar" ]]; then
  if ! command -v npm >/dev/null; then
    apt_install npm
  fi
  echo "fetching DynamoDB Local ($PACKAGE) into $ROOT (once)" >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$PACKAGE" >/dev/null)
  mkdir -p "$tmp/unpacked"
  tar xzf "$tmp"/amplify-dynamodb-simulator-*.tgz -C "$tmp/unpacked"
  # Whole or not at all: an interrupted unpacking leaves nothing behind.
  rm -rf "$ROOT"
  mkdir -p "$(dirname "$ROOT")"
  mv "$tmp/unpacked" "$ROOT"
fi
echo "$DIR"
