#!/usr/bin/env bash
# Makes sure headless Chromium runs (installing Debian's chromium with
# apt-get if not) and fetches playwright-core once from npm into the
# cache, to drive it. Prints two lines: the Chromium binary, and the
# node_modules directory holding playwright-core.
set -euo pipefail

CACHE="${ZAPINBOX_CACHE:-$HOME/.cache/zapinbox}"
PACKAGE="playwright-core@1"
DIR="$CACHE/playwright"

# shellcheck source=scripts/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

chromium="$(command -v chromium || true)"
if [[ -z "$chromium" ]]; then
  echo "installing Chromium (the dashboard's tests drive it headless)" >&2
  apt_install chromium
  chromium="$(command -v chromium)"
fi
if [[ ! -f "$DIR/node_modules/playwright-core/package.json" ]]; then
  if ! command -v npm >/dev/null; then
    apt_install npm
  fi
  echo "fetching $PACKAGE into $DIR (once)" >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  npm install --silent --no-audit --no-fund --prefix "$tmp" "$PACKAGE" >&2
  rm -rf "$DIR"
  mkdir -p "$CACHE"
  mv "$tmp" "$DIR"
  trap - EXIT
fi
echo "$chromium"
echo "$DIR/node_modules"
