#!/usr/bin/env bash
# Installs the WebSocket client packages the bootstraps use — `ws` (npm) for bootstrap-websocket.js
# and `websockets` (PyPI) for bootstrap-websocket.py — into a private folder, never globally.
# The process executor puts that folder on NODE_PATH / PYTHONPATH of every instance.
#
#   runtimes/install-deps.sh [DIR]     (default: ./data/runtime-deps, the server's default)
#
# Without these packages the bootstraps log why and fall back to the HTTP Runtime API.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-./data/runtime-deps}
mkdir -p "$dir/node" "$dir/python"
dir=$(cd "$dir" && pwd)

ws_version=$(node -p "require('$here/node/package.json').dependencies.ws")
if [ ! -f "$dir/node/node_modules/ws/package.json" ]; then
    echo "install-deps: npm ws@$ws_version -> $dir/node"
    npm install --silent --no-audit --no-fund --prefix "$dir/node" "ws@$ws_version" >/dev/null
fi
if ! PYTHONPATH="$dir/python" python3 -c 'import websockets, sys; sys.exit(int(websockets.__version__.split(".")[0]) < 11)' 2>/dev/null; then
    echo "install-deps: pip $(cat "$here/python/requirements.txt") -> $dir/python"
    python3 -m pip install --quiet --disable-pip-version-check --upgrade --target "$dir/python" -r "$here/python/requirements.txt"
fi
echo "install-deps: ready in $dir"
