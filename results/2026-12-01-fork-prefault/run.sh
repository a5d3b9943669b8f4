#!/usr/bin/env bash
# One round of the fork-prefault A/B: LABEL ROUND [RUNTIMES_DIR]. "before" ran the same server
# binary with --runtimes-dir pointing at `git archive f63ce2a runtimes` (the bootstrap without
# `_prefault`), "after" with the repository's runtimes/ at 57136d6. Run from the repository root
# with release builds of the server and loadgen; OUT is where the JSON goes.
set -u
label=$1; r=$2; rt=${3:-}
out=${OUT:-.}
data=$(mktemp -d)
extra=""; [ -n "$rt" ] && extra="--runtimes-dir $rt"
RUST_LOG=warn target/release/lambda-at-home-server --executor process $extra --data-dir "$data" \
    --runtime-deps-dir runtimes/.deps --user-api-port 29000 --runtime-api-port 29001 >/dev/null 2>&1 &
pid=$!
sleep 1.5
target/release/loadgen --endpoint http://127.0.0.1:29000 --server-pid $pid --runtimes python \
    --samples 3 --later-samples 8 --json -q cold > "$out/$label-$r.json"
kill -TERM $pid; wait $pid; rm -rf "$data"
