#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a while (default 30 s each) on stable Rust, without a
# sanitizer: `cargo fuzz run -s none`. Installs cargo-fuzz from crates.io when it is missing.
# A crash fails the script; its input is left in fuzz/artifacts/<target>/.
#   scripts/fuzz.sh [seconds-per-target]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
for target in $(cargo fuzz list --fuzz-dir fuzz); do
  echo "fuzz: $target for ${seconds}s"
  log="$(mktemp)"
  if ! cargo fuzz run --fuzz-dir fuzz -s none "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target failed; inputs in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "^Done [0-9]+ runs" "$log" || tail -n 3 "$log"
  rm -f "$log"
done
