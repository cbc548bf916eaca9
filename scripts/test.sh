#!/usr/bin/env bash
# Runs every check and test of zapinbox. The one command CI runs.
#
#   ./scripts/test.sh          everything: fmt, clippy, tests, docs, bench smoke run
#
# Builds go to $CARGO_TARGET_DIR, by default a cache outside the clone
# ($HOME/.cache/zapinbox/target), so a fresh clone on the same machine
# reuses earlier builds.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/zapinbox/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUSTDOCFLAGS="${RUSTDOCFLAGS:--D warnings}"

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: $(cargo --version)"
rustup component list --installed 2>/dev/null | grep -qE '^(rustfmt|clippy)' || true

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --features kafka,dynamo -- -D warnings

step "sqlite beside sqlx: one libsqlite3-sys for both"
./scripts/check-sqlx-compat.sh

step "kafka: a tansu broker on 127.0.0.1 (built once into the cache, stopped at exit)"
# shellcheck source=scripts/tansu.sh
source scripts/tansu.sh
start_tansu

step "dynamodb: DynamoDB Local on 127.0.0.1 (fetched once into the cache, stopped at exit)"
# shellcheck source=scripts/dynamodb.sh
source scripts/dynamodb.sh
start_dynamodb

step "browser: headless Chromium and playwright-core for the dashboard's test (installed once)"
browser="$(./scripts/install-browser.sh)"
ZAPINBOX_CHROMIUM="$(sed -n 1p <<<"$browser")"
ZAPINBOX_PLAYWRIGHT="$(sed -n 2p <<<"$browser")"
export ZAPINBOX_CHROMIUM ZAPINBOX_PLAYWRIGHT
export ZAPINBOX_SCREENSHOT="$CARGO_TARGET_DIR/dashboard.png"

step "tests"
# Benches run once below, in their quick mode.
cargo test --workspace --lib --bins --tests --examples

step "doc tests"
cargo test --workspace --doc

step "docs"
cargo doc --workspace --no-deps --quiet

step "examples run"
for example in quickstart worker usage_report; do
  cargo run --quiet --example "$example" > "$CARGO_TARGET_DIR/$example.out"
  printf '%s: %s\n' "$example" "$(tail -n 1 "$CARGO_TARGET_DIR/$example.out")"
done
# On Kafka, with a broker started inside the example's process.
for example in quickstart worker; do
  ZAPINBOX_BACKEND=kafka cargo run --quiet --features kafka --example "$example" > "$CARGO_TARGET_DIR/$example-kafka.out"
  printf '%s on kafka: %s\n' "$example" "$(tail -n 1 "$CARGO_TARGET_DIR/$example-kafka.out")"
done
# On DynamoDB Local, each in a table of its own made afresh.
for example in quickstart worker; do
  ZAPINBOX_BACKEND=dynamo cargo run --quiet --features dynamo --example "$example" > "$CARGO_TARGET_DIR/$example-dynamo.out"
  printf '%s on dynamo: %s\n' "$example" "$(tail -n 1 "$CARGO_TARGET_DIR/$example-dynamo.out")"
done

# The ZapStream-compatible server, over HTTP, stopped by SIGTERM.
./scripts/zapstream-smoke.sh

step "benchmark smoke run (report only, no timed assertions)"
ZAPINBOX_BENCH_QUICK=1 cargo bench --quiet --bench compare > "$CARGO_TARGET_DIR/bench-quick.md" 2>/dev/null
grep -E '^- (64|1 producer|ingest_batch|pull|claim|Worker|ceiling|soak|RSS|small tenant|longest stall)' "$CARGO_TARGET_DIR/bench-quick.md" || true

step "all checks passed"
