#!/usr/bin/env bash
# `liveroom new` end to end: scaffold an app into a temp folder, run its Rust tests, install and
# type-check its front end, build it, and drive it in Chromium (two users, then the dev proxy).
# Needs what scripts/test.sh installed before it (npm packages of examples/board/e2e, chromium).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
app="$work/my-app"

cd "$ROOT"
cargo run --quiet -p liveroom-cli -- new "$app"
# The app's own build, sharing this checkout's target directory (same crate versions: the
# scaffold copied Cargo.lock), so its dependencies are not compiled twice.
export CARGO_TARGET_DIR="$ROOT/target"
(cd "$app" && cargo test --quiet)
(cd "$app/web" && npm install --silent --no-audit --no-fund && npm run check --silent && npm run build --silent)
(cd examples/board/e2e && node scaffold.mjs "$app" "$CARGO_TARGET_DIR/debug/my-app")
