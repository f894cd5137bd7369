#!/usr/bin/env bash
# The whole test suite: `bash scripts/test.sh`. Works on a fresh Debian machine: it installs
# what it needs (apt: redis-server and redis-tools (7.0+, for Redis Cluster), chromium, python3, make; npm packages per package-lock;
# cargo-fuzz from crates.io), builds, and runs
# every suite. Each suite starts its own services (redis-server on free ports, servers on
# port 0); nothing shared is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-cli >/dev/null || need_apt+=(redis-tools) # redis-cli --cluster create
command -v chromium >/dev/null || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs npm)
command -v python3 >/dev/null || need_apt+=(python3)
command -v make >/dev/null || need_apt+=(make) # jemalloc, built from source
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# A full run needs about 10 GB of disk (debug, release and fuzz builds); say so up front rather
# than dying in the linker.
avail_kb=$(df -Pk . | awk 'NR==2 {print $4}')
if [ "$avail_kb" -lt $((8 * 1024 * 1024)) ]; then
  echo "warning: only $((avail_kb / 1024)) MiB free on $(df -P . | awk 'NR==2 {print $6}'); the suite may run out of disk"
fi

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "module layering: no import cycle in the library"
python3 scripts/check-module-cycles.py --self-test
python3 scripts/check-module-cycles.py crates/liveroom/src --layers

step "build"
cargo build --workspace --quiet

step "benchmark peer: Socket.IO 4 (npm), which the bench's tests and smoke run use"
(cd crates/liveroom-bench/peers/socketio && npm ci --silent --no-audit --no-fund)
export LIVEROOM_BENCH_REQUIRE_PEERS=1

step "Rust tests (core, rooms, limits, cluster, demo server)"
cargo test --workspace 2>&1 | tee target/rust-tests.log

step "JS client"
(cd clients/js && npm ci --silent --no-audit --no-fund && npm test)

step "demo front end: rebuild and check the committed manifest and bundle are fresh"
./target/debug/board manifest | diff -u examples/board/web/src/live/manifest.json - \
  || { echo "examples/board/web/src/live/manifest.json is stale: regenerate it with 'cargo run -p board -- manifest'"; exit 1; }
(cd examples/board/web && npm ci --silent --no-audit --no-fund && npm run build --silent)
if ! git diff --quiet -- examples/board/web/dist || [ -n "$(git status --porcelain -- examples/board/web/dist)" ]; then
  git status --short -- examples/board/web/dist
  echo "examples/board/web/dist is stale: run 'npm run build' in examples/board/web and commit it"; exit 1
fi

step "demo front end: strict type check against the generated types (svelte-check)"
(cd examples/board/web && npm run check --silent)
# Code only: a doc comment may say "any".
if grep -nvE '^\s*(/\*\*|\*)' examples/board/web/src/live/generated/*.d.ts | grep -w any; then
  echo "the board's generated types contain 'any'"; exit 1
fi
# A type regression must fail: a call with a wrong argument type does not type-check.
probe=examples/board/web/src/typecheck-probe.ts
printf "import { board } from '\$live/collab';\nexport const wrong = board.addCard('b', 42);\n" > "$probe"
if (cd examples/board/web && npx svelte-check --tsconfig ./tsconfig.json --output machine > ../../../target/typecheck-probe.log 2>&1); then
  rm -f "$probe"; echo "svelte-check accepted board.addCard('b', 42)"; exit 1
fi
rm -f "$probe"
grep -q "typecheck-probe.ts.*not assignable to parameter of type 'string'" target/typecheck-probe.log \
  || { cat target/typecheck-probe.log; echo "the probe failed for another reason"; exit 1; }

step "browser end-to-end tests (chromium)"
(cd examples/board/e2e && npm ci --silent --no-audit --no-fund && BOARD_BIN="$ROOT/target/debug/board" npm test)

step "publish-ready packages: cargo publish --dry-run, the npm tarball installs and works"
bash scripts/package-check.sh

step "a new app from 'liveroom new': its tests, its type check, two users in Chromium"
bash scripts/scaffold-test.sh

step "attacks: hostile clients against the release server, one at a time"
cargo test --release --quiet -p liveroom-testserver --test attacks -- --ignored --test-threads=1 --nocapture 2>&1 \
  | tee target/attacks.log | grep -E "victim:|test result|panicked"

step "fuzz targets (20 s each, stable Rust, no sanitizer)"
bash scripts/fuzz.sh 20

step "benchmark smoke run"
cargo run --quiet -p liveroom-bench -- suite --size smoke --strict

step "all suites passed"
