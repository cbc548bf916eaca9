#!/usr/bin/env bash
# A host may link only one libsqlite3-sys (`links = "sqlite3"`). Checks that
# zapinbox-sqlite resolves beside the current sqlx with SQLite support, by
# resolving (not building) a scratch project that depends on both.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sqlx_version="${SQLX_VERSION:-0.9}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/src"
echo 'fn main() {}' > "$scratch/src/main.rs"
cat > "$scratch/Cargo.toml" <<TOML
[package]
name = "sqlx-beside-zapinbox"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
zapinbox-sqlite = { path = "$root/zapinbox-sqlite" }
sqlx = { version = "$sqlx_version", default-features = false, features = ["sqlite"] }

[workspace]
TOML
if ! out="$(cd "$scratch" && cargo generate-lockfile 2>&1)"; then
  echo "$out" >&2
  echo "FAIL: zapinbox-sqlite does not resolve beside sqlx $sqlx_version" >&2
  exit 1
fi
versions="$(grep -A1 '^name = "libsqlite3-sys"' "$scratch/Cargo.lock" | grep '^version' | sort -u)"
count="$(printf '%s\n' "$versions" | grep -c . || true)"
if [ "$count" -ne 1 ]; then
  echo "FAIL: expected one libsqlite3-sys, found: $versions" >&2
  exit 1
fi
echo "ok: zapinbox-sqlite and sqlx $sqlx_version share libsqlite3-sys ${versions#version = }"
