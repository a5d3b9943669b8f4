#!/usr/bin/env bash
# A real two-node Docker Swarm on one machine, for tests and for the future `--executor swarm`
# (issue 16). See docs/swarm.md.
#
#   scripts/swarm-two-node.sh [--state-dir DIR] {up|down|status|env}
#
# `up` builds two network namespaces (<name>1, <name>2) joined by one veth pair on a private /24
# (default 10.231.0.1 and 10.231.0.2), starts one dockerd in each (own data-root, exec-root,
# pidfile, unix socket, config file and cgroup parent, all under the state dir), makes node 1 a
# Swarm manager and joins node 2 as a worker, creates an attachable overlay network, and loads the
# runtime images from the host's engine into both (docker save | docker load, no registry).
# `down` removes all of it and is idempotent; `up` runs `down` first, so it recovers from a
# crashed run. `status` prints what exists; `env` prints shell exports for the two engines.
# Exit status: 0 done, 3 this machine cannot run it ("cannot run: <what is missing>"), other
# failures 1.
#
# Isolation: the namespaces have no route out (no default route, no link to the host's network
# namespace), so nothing leaves them. Each dockerd runs with its own iptables rules in its own
# namespace (its masquerade lets a task on node 2 reach node 1's address) and with
# `--bridge=none`; Docker's 172.17 bridge is never created. The host's engine is only read from
# (`docker save`). Processes started here are found again through the namespaces, the pidfiles
# and the cgroup parent, never by name.
#
# Env: LAH_SWARM_NAME (default lahsw: namespace, cgroup and network prefix),
#      LAH_SWARM_STATE_DIR (default <repo>/target/swarm; --state-dir wins),
#      LAH_SWARM_NET (first three octets of the veth /24, default 10.231.0),
#      LAH_SWARM_OVERLAY_POOL (Swarm's address pool for overlay networks, default 10.232.0.0/16),
#      LAH_SWARM_LOCAL_POOL (each engine's pool for local networks such as docker_gwbridge,
#                            default 10.233.0.0/16),
#      LAH_SWARM_IMAGES (images to copy from the engine the plain docker CLI talks to, i.e.
#                        DOCKER_HOST or its default; default the three lambda-at-home/*:bookworm),
#      LAH_SWARM_HEARTBEAT (dispatcher heartbeat period, e.g. 1s; default Swarm's 5s),
#      LAH_SWARM_WAIT_S (longest wait for an engine or a node, default 60).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
name="${LAH_SWARM_NAME:-lahsw}"
state="${LAH_SWARM_STATE_DIR:-$repo/target/swarm}"
net="${LAH_SWARM_NET:-10.231.0}"
overlay_pool="${LAH_SWARM_OVERLAY_POOL:-10.232.0.0/16}"
local_pool="${LAH_SWARM_LOCAL_POOL:-10.233.0.0/16}"
images="${LAH_SWARM_IMAGES:-lambda-at-home/python:bookworm lambda-at-home/nodejs:bookworm lambda-at-home/provided:bookworm}"
heartbeat="${LAH_SWARM_HEARTBEAT:-}"
wait_s="${LAH_SWARM_WAIT_S:-60}"

cmd=""
while [ $# -gt 0 ]; do
    case "$1" in
        --state-dir) state="$2"; shift 2 ;;
        --state-dir=*) state="${1#--state-dir=}"; shift ;;
        up|down|status|env) cmd="$1"; shift ;;
        *) echo "usage: $0 [--state-dir DIR] {up|down|status|env}" >&2; exit 2 ;;
    esac
done
[ -n "$cmd" ] || { echo "usage: $0 [--state-dir DIR] {up|down|status|env}" >&2; exit 2; }
case "$state" in /*) ;; *) state="$PWD/$state" ;; esac

die() { echo "swarm-two-node: $*" >&2; exit 1; }
say() { echo "swarm-two-node: $*" >&2; }
# Exit status 3: this machine cannot run the harness (tests skip on it, printing the message).
cannot() { echo "swarm-two-node: cannot run: $*" >&2; exit 3; }

ns_of() { echo "${name}$1"; }
veth_of() { echo "${name}$1-v"; }
addr_of() { echo "${net}.$1"; }
dir_of() { echo "$state/node$1"; }
sock_of() { echo "unix://$(dir_of "$1")/docker.sock"; }
overlay_net() { echo "${name}-net"; }
# The docker CLI against node N's engine.
dk() { local n="$1"; shift; docker -H "$(sock_of "$n")" "$@"; }

# -------------------------------------------------------------------------------------------
# Capability checks: each failure names exactly what is missing.
# -------------------------------------------------------------------------------------------
check_caps() {
    [ "$(id -u)" -eq 0 ] || cannot "no CAP_NET_ADMIN/CAP_SYS_ADMIN (not root)"
    local tool
    for tool in ip dockerd docker nsenter unshare iptables; do
        command -v "$tool" >/dev/null 2>&1 || cannot "$tool not found"
    done
    local probe="${name}probe"
    ip netns del "$probe" 2>/dev/null || true
    ip netns add "$probe" 2>/dev/null || cannot "ip netns add failed (no network namespaces?)"
    local err=""
    if ! err="$(ip netns exec "$probe" ip link add "${name}vx" type vxlan id 4242 dstport 4789 2>&1)"; then
        ip netns del "$probe"
        cannot "no vxlan in a network namespace: $err"
    fi
    if ! err="$(ip netns exec "$probe" ip link add "${name}br" type bridge 2>&1)"; then
        ip netns del "$probe"
        cannot "no bridge in a network namespace: $err"
    fi
    ip netns del "$probe"
}

# -------------------------------------------------------------------------------------------
# down: graceful first (swarm leave, containers removed, dockerd TERM), then by force.
# -------------------------------------------------------------------------------------------
kill_pids() {
    # kill_pids SIGNAL PID...: signals only the listed processes that still exist.
    local sig="$1"; shift
    local pid
    for pid in "$@"; do
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && kill "-$sig" "$pid" 2>/dev/null || true
    done
}

wait_gone() {
    # wait_gone SECONDS PID...: true once none of the processes exists.
    local deadline=$((SECONDS + $1)); shift
    local pid alive
    while :; do
        alive=""
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && return 0
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}

# Processes in node N's cgroup parent, in every cgroup v1 hierarchy or the v2 tree: the
# containers, which live in their own network namespaces.
cgroup_dirs() {
    local cg="$(ns_of "$1")"
    local d
    for d in /sys/fs/cgroup/*/"$cg" /sys/fs/cgroup/"$cg"; do
        [ -d "$d" ] && echo "$d"
    done
    return 0
}
cgroup_pids() {
    local d
    for d in $(cgroup_dirs "$1"); do
        find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
    done | sort -u
}
netns_pids() {
    local ns="$(ns_of "$1")"
    ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns" || return 0
    ip netns pids "$ns" 2>/dev/null || true
}

node_down() {
    local n="$1"
    local dir pidfile pid
    dir="$(dir_of "$n")"
    if [ -S "$dir/docker.sock" ] && timeout 5 docker -H "$(sock_of "$n")" version >/dev/null 2>&1; then
        if [ "$n" = 1 ]; then
            timeout 20 docker -H "$(sock_of "$n")" service ls -q 2>/dev/null \
                | xargs -r timeout 20 docker -H "$(sock_of "$n")" service rm >/dev/null 2>&1 || true
        fi
        timeout 20 docker -H "$(sock_of "$n")" swarm leave --force >/dev/null 2>&1 || true
        timeout 30 docker -H "$(sock_of "$n")" ps -aq 2>/dev/null \
            | xargs -r timeout 30 docker -H "$(sock_of "$n")" rm -f >/dev/null 2>&1 || true
    fi
    local pids=""
    for pidfile in "$dir/docker.pid" "$dir/launch.pid"; do
        [ -f "$pidfile" ] || continue
        pid="$(cat "$pidfile" 2>/dev/null || true)"
        # A pidfile left by a crash may name a pid since reused: only a process whose command
        # line names this node's state dir is ours.
        [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$dir/" \
            && pids="$pids $pid"
    done
    if [ -n "${pids// /}" ]; then
        # shellcheck disable=SC2086
        kill_pids TERM $pids
        # shellcheck disable=SC2086
        wait_gone 20 $pids || kill_pids KILL $pids
        # shellcheck disable=SC2086
        wait_gone 5 $pids || true
    fi
    # Whatever is left in the namespace (containerd, shims) or the cgroup parent (containers).
    local rest
    rest="$( { netns_pids "$n"; cgroup_pids "$n"; } | sort -u | tr '\n' ' ')"
    if [ -n "${rest// /}" ]; then
        # Their engine is gone, so nothing would stop them cleanly (and a container's PID 1
        # ignores SIGTERM unless it handles it): SIGKILL.
        # shellcheck disable=SC2086
        kill_pids KILL $rest
        # shellcheck disable=SC2086
        wait_gone 5 $rest || say "node $n: processes still alive after SIGKILL: $rest"
    fi
    local d
    for d in $(cgroup_dirs "$n"); do
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    # Mounts under the state dir show up here only if a dockerd ran in the host's mount
    # namespace (`up` gives each its own); unmount them, deepest first, before deleting.
    if [ -d "$dir" ]; then
        awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r \
            | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    fi
    ip netns del "$(ns_of "$n")" 2>/dev/null || true
    ip link del "$(veth_of "$n")" 2>/dev/null || true
    rm -rf "$dir"
}

down() {
    # Node 2 first: the worker leaves before the manager goes.
    node_down 2
    node_down 1
    rm -f "$state/images.tar"
    [ -d "$state" ] && rmdir "$state" 2>/dev/null || true
}

# -------------------------------------------------------------------------------------------
# up
# -------------------------------------------------------------------------------------------
wait_engine() {
    local n="$1"
    local dir pid
    dir="$(dir_of "$n")"
    pid="$(cat "$dir/launch.pid")"
    local deadline=$((SECONDS + wait_s))
    until timeout 5 docker -H "$(sock_of "$n")" version >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$dir/dockerd.log" >&2 || true
            die "node $n: dockerd exited (log above)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$dir/dockerd.log" >&2 || true
            die "node $n: dockerd did not answer within ${wait_s}s"
        fi
        sleep 0.5
    done
}

start_node() {
    local n="$1"
    local ns dir
    ns="$(ns_of "$n")"
    dir="$(dir_of "$n")"
    mkdir -p "$dir/data" "$dir/exec" "$dir/run-containerd"
    # An empty config file: the host's /etc/docker/daemon.json (if any) must not apply here.
    echo '{}' >"$dir/daemon.json"
    # nsenter keeps the host's /sys (with its cgroup mounts) where `ip netns exec` would remount
    # it. unshare gives dockerd a mount namespace of its own (slave: host mounts still appear in
    # it; its overlay and netns mounts never appear on the host and vanish with its processes)
    # and a UTS namespace, so the two nodes have distinct hostnames. containerd's shims put
    # their sockets in the fixed /run/containerd/s: a bind mount keeps those in the state dir
    # too, where `down` removes them even after a crash.
    mkdir -p /run/containerd
    setsid nsenter --net="/run/netns/$ns" \
        unshare --mount --uts --propagation slave \
        sh -c 'hostname "$1" && mount --bind "$2" /run/containerd && shift 2 && exec dockerd "$@"' \
        sh "$ns" "$dir/run-containerd" \
        --config-file "$dir/daemon.json" \
        --data-root "$dir/data" \
        --exec-root "$dir/exec" \
        --pidfile "$dir/docker.pid" \
        -H "$(sock_of "$n")" \
        --bridge=none \
        --iptables=true \
        --ip-masq=true \
        --default-address-pool "base=$local_pool,size=24" \
        --cgroup-parent "$ns" \
        --storage-driver overlay2 \
        </dev/null >"$dir/dockerd.log" 2>&1 &
    # setsid, nsenter, unshare and sh all exec in place: this is dockerd's pid, known before
    # dockerd writes its pidfile (and even if it never does).
    echo "$!" >"$dir/launch.pid"
}

up() {
    check_caps
    down
    mkdir -p "$state"
    # Both ends of the veth live in the namespaces: the host's namespace never sees 10.231.0.x.
    local n
    for n in 1 2; do ip netns add "$(ns_of "$n")"; done
    ip link add "$(veth_of 1)" netns "$(ns_of 1)" type veth peer name "$(veth_of 2)" netns "$(ns_of 2)"
    for n in 1 2; do
        ip -n "$(ns_of "$n")" link set lo up
        ip -n "$(ns_of "$n")" addr add "$(addr_of "$n")/24" dev "$(veth_of "$n")"
        ip -n "$(ns_of "$n")" link set "$(veth_of "$n")" up
    done
    for n in 1 2; do start_node "$n"; done
    for n in 1 2; do wait_engine "$n"; done
    say "engines up: $(dk 1 version --format '{{.Server.Version}}') in $(ns_of 1), $(ns_of 2)"

    local init_args=(--advertise-addr "$(addr_of 1)" --listen-addr "$(addr_of 1):2377"
        --default-addr-pool "$overlay_pool" --default-addr-pool-mask-length 24)
    [ -n "$heartbeat" ] && init_args+=(--dispatcher-heartbeat "$heartbeat")
    dk 1 swarm init "${init_args[@]}" >/dev/null
    local token
    token="$(dk 1 swarm join-token -q worker)"
    dk 2 swarm join --token "$token" --advertise-addr "$(addr_of 2)" --listen-addr "$(addr_of 2):2377" \
        "$(addr_of 1):2377" >/dev/null
    local deadline=$((SECONDS + wait_s))
    until [ "$(dk 1 node ls --format '{{.Status}}' | grep -c Ready)" -eq 2 ]; do
        [ "$SECONDS" -ge "$deadline" ] && die "node 2 did not become Ready within ${wait_s}s: $(dk 1 node ls)"
        sleep 0.5
    done
    # The routing mesh's ingress network needs IPVS, which this kind of kernel may lack; nothing
    # here publishes through it (host-mode ports, dnsrr endpoints), so it goes.
    # (`network rm` asks before removing the routing mesh's network.)
    echo y | dk 1 network rm ingress >/dev/null 2>&1 || say "could not remove the ingress network"
    local err
    if ! err="$(dk 1 network create --driver overlay --attachable "$(overlay_net)" 2>&1)"; then
        cannot "overlay network failed: $err"
    fi

    local image
    local have=()
    for image in $images; do
        if docker image inspect "$image" >/dev/null 2>&1; then have+=("$image"); else say "image $image is not on the host engine; not copied"; fi
    done
    if [ "${#have[@]}" -gt 0 ]; then
        docker save -o "$state/images.tar" "${have[@]}"
        for n in 1 2; do dk "$n" load -q -i "$state/images.tar" >/dev/null; done
        rm -f "$state/images.tar"
    fi
    say "up: manager $(addr_of 1) ($(ns_of 1)), worker $(addr_of 2) ($(ns_of 2)), overlay $(overlay_net), images: ${have[*]:-none}"
}

status() {
    local n
    for n in 1 2; do
        local ns pid="-"
        ns="$(ns_of "$n")"
        [ -f "$(dir_of "$n")/docker.pid" ] && pid="$(cat "$(dir_of "$n")/docker.pid")"
        if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns"; then
            echo "node $n: netns $ns ($(ip -n "$ns" -4 -o addr show dev "$(veth_of "$n")" 2>/dev/null | awk '{print $4}')), dockerd pid $pid"
        else
            echo "node $n: no netns $ns"
        fi
    done
    if timeout 5 docker -H "$(sock_of 1)" version >/dev/null 2>&1; then
        dk 1 node ls
        dk 1 network ls --filter driver=overlay
        dk 1 service ls
    fi
}

env_exports() {
    cat <<EOF
export LAH_SWARM_NODE1_HOST=$(sock_of 1)
export LAH_SWARM_NODE2_HOST=$(sock_of 2)
export LAH_SWARM_NODE1_NETNS=$(ns_of 1)
export LAH_SWARM_NODE2_NETNS=$(ns_of 2)
export LAH_SWARM_NODE1_ADDR=$(addr_of 1)
export LAH_SWARM_NODE2_ADDR=$(addr_of 2)
export LAH_SWARM_OVERLAY=$(overlay_net)
EOF
}

case "$cmd" in
    up) up ;;
    down) [ "$(id -u)" -eq 0 ] || cannot "no CAP_NET_ADMIN/CAP_SYS_ADMIN (not root)"; down ;;
    status) status ;;
    env) env_exports ;;
esac
