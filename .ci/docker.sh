#!/usr/bin/env bash
# Makes sure a Docker engine answers on this host, for the docker executor's tests and for
# building the runtime images (runtimes/images/build.sh). Idempotent: does nothing when
# `docker info` already works.
#
# The daemon runs with `--bridge=none --iptables=false`: containers use host networking only
# (the Runtime API is on 127.0.0.1) and the default 172.17 bridge is never created.
#
# Env: DOCKERD_LOG (default /tmp/dockerd.log), DOCKERD_WAIT_S (default 60).
set -euo pipefail

log_file="${DOCKERD_LOG:-/tmp/dockerd.log}"
wait_s="${DOCKERD_WAIT_S:-60}"

die() { echo "docker.sh: $*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v docker >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    [ "${#missing[@]}" -eq 0 ] && return 0
    echo "docker.sh: installing ${missing[*]}"
    as_root apt-get update -qq || die "apt-get update failed"
    local unique
    mapfile -t unique < <(printf '%s\n' "${missing[@]}" | sort -u)
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${unique[@]}" || die "apt-get install ${unique[*]} failed"
}

start_daemon() {
    echo "docker.sh: starting dockerd (log: $log_file)"
    # setsid + nohup: the daemon outlives this script and the CI step that ran it.
    as_root setsid nohup dockerd --bridge=none --iptables=false >"$log_file" 2>&1 < /dev/null &
}

wait_for_daemon() {
    local deadline=$((SECONDS + wait_s))
    until docker info >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "docker.sh: last lines of $log_file:" >&2
            tail -n 20 "$log_file" >&2 2>/dev/null || true
            die "dockerd did not answer within ${wait_s} s"
        fi
        sleep 1
    done
}

install_packages
if docker info >/dev/null 2>&1; then
    echo "docker.sh: docker engine already running"
    exit 0
fi
if pgrep -x dockerd >/dev/null 2>&1; then
    echo "docker.sh: dockerd is running but not answering yet; waiting"
else
    start_daemon
fi
wait_for_daemon
echo "docker.sh: docker engine ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
