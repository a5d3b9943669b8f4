#!/usr/bin/env bash
# loadgen against --executor swarm on the two-node Swarm of scripts/swarm-two-node.sh, and against
# --executor agent and --executor docker on the host for the same scenarios (the cost of the
# agent's hop, and the Swarm executor next to the Docker executor).
#
#   scripts/bench-swarm.sh [--out DIR] [--repeat N]
#
# Builds the release binaries first. Needs root, Docker, and the runtime images
# (runtimes/images/build.sh). The two-node harness is built, used and torn down; the server of
# the swarm run and its loadgen run inside node 1's network namespace (the tasks reach the
# Runtime API at node 1's address), the others on the host's loopback. Writes the reports
# `<date>-swarm-two-node.*`, `<date>-agent-host.*` and `<date>-docker-swarm-baseline.*` to DIR
# (default results/). Scenarios: cold (5 first-instance and 3 later-instance samples), warm,
# high frequency and throughput at c=10 and c=50, HTTP runtime transport (through the agent the
# runtime speaks HTTP to its own loopback whatever the transport, and the link is WebSocket).
set -euo pipefail
cd "$(dirname "$0")/.."
out=results
repeat=1
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --repeat) repeat="$2"; shift 2 ;;
        *) echo "usage: $0 [--out DIR] [--repeat N]" >&2; exit 2 ;;
    esac
done
cargo build --release --bins -q
cargo build --release -q -p loadgen
server=target/release/lambda-at-home-server
loadgen=target/release/loadgen
state=target/swarm-bench
name=lahsb
common=(--transports http --concurrency 10,50 --samples 5 --later-samples 3 --repeat "$repeat"
        --out "$out" --timeout-s 60)

wait_up() { # port, in the current namespace
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "bench-swarm: the server did not come up" >&2
    return 1
}

run_host() { # executor report-name
    local data pid
    data=$(mktemp -d)
    RUST_LOG=warn "$server" --executor "$1" --data-dir "$data" --runtime-deps-dir runtimes/.deps \
        --user-api-port 29900 --runtime-api-port 29901 >"$data.log" 2>&1 &
    pid=$!
    wait_up 29900
    "$loadgen" --endpoint http://127.0.0.1:29900 --server-pid "$pid" --name "$2" "${common[@]}" || true
    kill -TERM "$pid"; wait "$pid" || true
    rm -rf "$data" "$data.log"
}

# 1. The Swarm executor on two nodes.
LAH_SWARM_NAME=$name LAH_SWARM_NET=10.232.0 LAH_SWARM_HEARTBEAT=1s \
    scripts/swarm-two-node.sh --state-dir "$state" up
trap 'LAH_SWARM_NAME=$name scripts/swarm-two-node.sh --state-dir "$state" down' EXIT
node1="unix://$PWD/$state/node1/docker.sock"
node2="unix://$PWD/$state/node2/docker.sock"
DOCKER_HOST=$node1 runtimes/images/add-agent.sh --agent target/release/lah-agent python nodejs
for family in python nodejs; do
    docker -H "$node1" save "lambda-at-home/$family-agent:bookworm" | docker -H "$node2" load -q
done
data=$(mktemp -d)
DOCKER_HOST=$node1 RUST_LOG=warn nsenter --net="/run/netns/${name}1" "$server" --executor swarm \
    --runtime-bind 10.232.0.1 --swarm-network "$name-net" --init-timeout-s 60 \
    --data-dir "$data" --user-api-port 29900 --runtime-api-port 29901 >"$data.log" 2>&1 &
pid=$!
nsenter --net="/run/netns/${name}1" bash -c "$(declare -f wait_up); wait_up 29900"
nsenter --net="/run/netns/${name}1" "$loadgen" --endpoint http://127.0.0.1:29900 \
    --server-pid "$pid" --name swarm-two-node "${common[@]}" || true
kill -TERM "$pid"; wait "$pid" || true
rm -rf "$data" "$data.log"

# 2. The same path on one host (--executor agent), and 3. the Docker executor, for comparison.
run_host agent agent-host
run_host docker docker-swarm-baseline
