#!/bin/bash
# A/B (issue 12 §2): the same loadgen runs against two server binaries,
# alternating, each on a fresh server and data dir; the server's log goes to a file, as when
# redirected by a user.
# usage: ab.sh OUT_DIR ROUNDS LOG_LEVEL BINARY_A BINARY_B
#   LOG_LEVEL: the server's RUST_LOG ("" = unset, the default `info`)
set -u
out=$1 rounds=$2 level=$3
shift 3
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  for label in A B; do
    if [ $label = A ]; then bin=$1; else bin=$2; fi
    data=$(mktemp -d)
    if [ -n "$level" ]; then export RUST_LOG=$level; else unset RUST_LOG; fi
    "$bin" --executor process --data-dir "$data" --runtime-deps-dir runtimes/.deps \
      --user-api-port 29200 --runtime-api-port 29201 >"$data/server.log" 2>&1 &
    pid=$!
    unset RUST_LOG
    sleep 2
    name="${label}-${level:-default}-r${round}"
    target/release/loadgen --endpoint http://127.0.0.1:29200 --server-pid $pid --allow-stale -q \
      --warm-invokes 2000 --name "$name-warm" --out "$out" warm >/dev/null
    target/release/loadgen --endpoint http://127.0.0.1:29200 --server-pid $pid --allow-stale -q \
      --concurrency 10 --duration-s 5 --warmup-s 2 --name "$name-c10" --out "$out" throughput >/dev/null
    kill $pid; wait $pid 2>/dev/null
    rm -rf "$data"
  done
done
