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

# AWS's official runtime clients for tests/official_clients.rs. aws-lambda-ric compiles native code
# (its bundled curl and aws-lambda-cpp) with these Debian tools; 4.x needs node >= 22, so 3.3.0.
missing=""
for tool in cmake autoconf automake libtoolize g++ make; do
    command -v "$tool" >/dev/null || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    echo "test.sh: apt-get install cmake autoconf automake libtool g++ make (missing:$missing)"
    apt-get update -qq && apt-get install -y -qq cmake autoconf automake libtool g++ make >/dev/null
fi
if ! PYTHONPATH="$deps/awslambdaric" python3 -c 'import runtime_client, awslambdaric' 2>/dev/null; then
    echo "test.sh: pip awslambdaric -> $deps/awslambdaric"
    python3 -m pip install --quiet --disable-pip-version-check --target "$deps/awslambdaric" awslambdaric==4.2.2
fi
if [ ! -f "$deps/aws-lambda-ric/node_modules/aws-lambda-ric/dist/rapid-client.node" ]; then
    echo "test.sh: npm aws-lambda-ric (builds native code, a few minutes) -> $deps/aws-lambda-ric"
    npm install --silent --no-audit --no-fund --prefix "$deps/aws-lambda-ric" aws-lambda-ric@3.3.0 >/dev/null
fi
export LAH_AWSLAMBDARIC_DIR="$PWD/$deps/awslambdaric"
export LAH_AWS_LAMBDA_RIC_DIR="$PWD/$deps/aws-lambda-ric"
export LAH_REQUIRE_CLIENTS=1

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== node bootstrap tests"
NODE_PATH="$PWD/$deps/node/node_modules" node --test runtimes/node/test/ 2>&1 | tee -a "$log"
echo "== python bootstrap tests"
PYTHONPATH="$PWD/$deps/python" python3 -m unittest discover -s runtimes/python/tests 2>&1 | tee -a "$log"
echo "== cargo test"
cargo test --workspace --all-targets "$@" 2>&1 | tee -a "$log"

# One closing line over all three runners (each already failed the script on any failure).
awk '
    /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
    /^# pass / { p += $3 } /^# fail / { f += $3 }
    /^Ran [0-9]+ tests? / { p += $2 }
    END { printf "total: %d passed, %d failed\n", p, f }
' "$log"
