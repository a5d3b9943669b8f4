#!/usr/bin/env bash
# Builds the images of the swarm executor: lambda-at-home/<family>-agent:bookworm, FROM the local
# runtime image lambda-at-home/<family>:bookworm (runtimes/images/build.sh), plus the in-instance
# agent at /usr/local/bin/lah-agent and this repository's bootstraps at /var/runtime. No registry:
# `docker build` with a local base image works offline. See docs/swarm.md.
#
# Usage: add-agent.sh [--agent PATH] [FAMILY...]     FAMILY: python nodejs provided (default: all)
#   --agent PATH  the lah-agent binary (default: target/release/lah-agent, else target/debug/)
# The engine is docker's default or DOCKER_HOST: build on the Swarm manager, then copy the images
# to every other node without a registry:
#   docker save lambda-at-home/python-agent:bookworm | docker -H ssh://node2 load
# Needs: docker; strip (binutils) is used when present to drop the agent's debug info.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
agent=""
families=()
while [ $# -gt 0 ]; do
    case "$1" in
        --agent) agent="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) families+=("$1"); shift ;;
    esac
done
[ ${#families[@]} -gt 0 ] || families=(python nodejs provided)
if [ -z "$agent" ]; then
    for candidate in "$repo/target/release/lah-agent" "$repo/target/debug/lah-agent"; do
        if [ -x "$candidate" ]; then agent="$candidate"; break; fi
    done
fi
[ -n "$agent" ] && [ -x "$agent" ] || {
    echo "add-agent.sh: no lah-agent binary (cargo build --release --bin lah-agent, or --agent PATH)" >&2
    exit 1
}

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
if command -v strip >/dev/null 2>&1; then
    strip -o "$ctx/lah-agent" "$agent"
else
    cp "$agent" "$ctx/lah-agent"
fi
chmod 0755 "$ctx/lah-agent"
mkdir -p "$ctx/runtime"
for dir in python node; do
    mkdir -p "$ctx/runtime/$dir"
    find "$repo/runtimes/$dir" -maxdepth 1 -type f \( -name '*.py' -o -name '*.js' -o -name '*.json' \) \
        -exec cp {} "$ctx/runtime/$dir/" \;
done
chmod -R a+rX "$ctx/runtime"
agent_sha="$(sha256sum "$ctx/lah-agent" | cut -d' ' -f1)"

for family in "${families[@]}"; do
    case "$family" in
        python|nodejs|provided) ;;
        *) echo "add-agent.sh: unknown family $family" >&2; exit 1 ;;
    esac
    base="lambda-at-home/$family:bookworm"
    tag="lambda-at-home/$family-agent:bookworm"
    docker image inspect "$base" >/dev/null 2>&1 || {
        echo "add-agent.sh: base image $base missing on this engine (runtimes/images/build.sh, or docker load it)" >&2
        exit 1
    }
    cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $base
COPY lah-agent /usr/local/bin/lah-agent
COPY runtime/ /var/runtime/
LABEL lambda-at-home.agent-sha256=$agent_sha
DOCKERFILE
    docker build --quiet --tag "$tag" "$ctx" >/dev/null
    echo "$tag"
done
