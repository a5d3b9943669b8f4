#!/usr/bin/env bash
# The whole test suite: Rust unit and end-to-end tests (real server, real Node/Python runtimes),
# the Node and Python bootstrap tests, and the boto3 compatibility check.
# Needs: cargo, node (>= 18), python3 (>= 3.10) with pip, npm. Installs the runtimes' WebSocket
# packages and boto3 privately under runtimes/.deps on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
deps=runtimes/.deps
runtimes/install-deps.sh "$deps"
if ! PYTHONPATH="$deps/test-python" python3 -c 'import boto3' 2>/dev/null; then
    echo "test.sh: pip boto3 -> $deps/test-python"
    python3 -m pip install --quiet --disable-pip-version-check --target "$deps/test-python" boto3
fi
export LAH_TEST_PYTHONPATH="$PWD/$deps/test-python"

echo "== node bootstrap tests"
NODE_PATH="$PWD/$deps/node/node_modules" node --test runtimes/node/test/
echo "== python bootstrap tests"
PYTHONPATH="$PWD/$deps/python" python3 -m unittest discover -s runtimes/python/tests
echo "== cargo test"
cargo test --workspace --all-targets "$@"
