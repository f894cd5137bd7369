#!/usr/bin/env bash
# The packages are publish-ready: `cargo publish --dry-run` builds each crate from exactly what
# would be uploaded, and the npm tarball of the JS client installs and works in an empty project.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
for crate in liveroom liveroom-client liveroom-cli; do
  cargo publish --dry-run --allow-dirty --quiet -p "$crate"
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tgz="$(cd clients/js && npm pack --silent --pack-destination "$work")"
for f in src/index.js src/index.d.ts src/vite.js src/codegen.js src/follow.js bin/liveroom.js README.md; do
  tar -tzf "$work/$tgz" "package/$f" > /dev/null || { echo "the npm package lacks $f"; exit 1; }
done
if tar -tzf "$work/$tgz" | grep -qE '^package/(test|test-helpers|node_modules)/'; then
  echo "the npm package ships its tests"; exit 1
fi
cd "$work"
npm init -y > /dev/null
npm install --silent --no-audit --no-fund "./$tgz"
node -e "import('liveroom').then((m) => { if (typeof m.createClient !== 'function') process.exit(1); })"
node_modules/.bin/liveroom codegen --manifest "$ROOT/examples/board/web/src/live/manifest.json" --out live > /dev/null
grep -q "addCard: RpcFunction<\[boardId: string, title: string\], Card>;" live/collab.d.ts \
  || { echo "the installed codegen did not type addCard"; exit 1; }
echo "packages: 3 crates and the npm tarball ($tgz) are publish-ready"
