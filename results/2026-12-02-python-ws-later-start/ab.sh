#!/bin/bash
# One round of the A/B in ../2026-12-02-python-ws-later-start.md: a fresh server (the checkout's
# release binary) with the runtimes from <runtimes dir>, then `loadgen cold` on the Python
# functions. usage: OUT=<dir> ab.sh <label> <runtimes dir> <round>
set -u
cd "$(git rev-parse --show-toplevel)"
D=$(mktemp -d)
target/release/lambda-at-home-server --executor process --data-dir "$D" --runtime-deps-dir runtimes/.deps \
    --runtimes-dir "$2" --user-api-port 29100 --runtime-api-port 29101 > "$OUT/$1-$3.server.log" 2>&1 &
P=$!
sleep 2
target/release/loadgen --endpoint http://127.0.0.1:29100 --server-pid $P cold --runtimes python \
    --samples 2 --later-samples 15 -q --json > "$OUT/$1-$3.json" 2> "$OUT/$1-$3.err"
kill $P; wait $P 2>/dev/null; rm -rf "$D"
