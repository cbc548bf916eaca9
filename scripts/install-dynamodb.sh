#!/usr/bin/env bash
# Fetches Amazon's DynamoDB Local once, from the npm package that ships it
# (amplify-dynamodb-simulator), into the cache, and makes sure Java runs.
# Prints the directory holding DynamoDBLocal.jar.
set -euo pipefail

CACHE="${ZAPINBOX_CACHE:-$HOME/.cache/zapinbox}"
PACKAGE="amplify-dynamodb-simulator@2.9.30"   # DynamoDB Local 1.25.1
ROOT="$CACHE/dynamodb-local-2.9.30"
DIR="$ROOT/package/emulator"

apt_install() {
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq "$@" >&2
}

if ! command -v java >/dev/null; then
  echo "installing Java 17 (DynamoDB Local runs on it)" >&2
  apt_install openjdk-17-jre-headless
fi
if [[ ! -f "$DIR/DynamoDBLocal.jar" ]]; then
  if ! command -v npm >/dev/null; then
    apt_install npm
  fi
  echo "fetching DynamoDB Local ($PACKAGE) into $ROOT (once)" >&2
  mkdir -p "$ROOT"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$PACKAGE" >/dev/null)
  tar xzf "$tmp"/amplify-dynamodb-simulator-*.tgz -C "$ROOT"
  rm -rf "$tmp"
fi
echo "$DIR"
