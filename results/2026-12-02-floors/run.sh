#!/bin/bash
# The floor variants (loadgen floor --server/--protocol/--callers), ROUNDS rounds, alternating.
# usage: run.sh OUT_DIR ROUNDS
set -eu
out=$1 rounds=$2
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  for server in tokio uring; do
    for protocol in http frames; do
      target/release/loadgen floor --server $server --protocol $protocol --warm-invokes 2000 \
        --name "floor-$server-$protocol-seq-r$round" --out "$out" -q >/dev/null
      target/release/loadgen floor --server $server --protocol $protocol --callers 10 \
        --duration-s 5 --warmup-s 2 --name "floor-$server-$protocol-c10-r$round" --out "$out" -q >/dev/null
    done
  done
done
