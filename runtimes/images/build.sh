#!/usr/bin/env bash
# Builds the runtime images of the docker executor from Debian packages only (no container
# registry needed): debootstrap a minbase Debian rootfs, install one runtime family into it,
# strip docs, and `docker import` it. See README.md next to this script for what each image holds.
#
# Cached twice:
#  - each image carries the label lambda-at-home.recipe-sha256 = sha256 of its recipe (the shell
#    functions below that build it, and its package lists); an image with the same tag and label
#    is kept as is;
#  - the debootstrap rootfs is kept as a tarball (and downloaded .debs as files) in $CACHE_DIR,
#    so a rebuild after a family recipe change skips debootstrap.
#
# Usage: build.sh [--force] [FAMILY...]     FAMILY: python nodejs provided (default: all)
# Env:   CACHE_DIR (default /var/cache/lambda-at-home), DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR.
# Needs: root, debootstrap, docker (run .ci/docker.sh first), pip for the host's python 3.11.
# The PACKAGES_*/PIP_* variables are read indirectly (${!name}).
# shellcheck disable=SC2034
set -euo pipefail

SUITE=bookworm
CACHE_DIR="${CACHE_DIR:-/var/cache/lambda-at-home}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
LABEL_KEY=lambda-at-home.recipe-sha256
ALL_FAMILIES=(python nodejs provided)
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# --- Recipe: everything below up to "Machinery" decides the images' content and is hashed. ---

# Packages per family, on top of the minbase rootfs.
PACKAGES_python="python3 ca-certificates"
PACKAGES_nodejs="nodejs node-ws ca-certificates"
PACKAGES_provided="ca-certificates"
# Installed from PyPI into /var/lang/lambda-at-home/python (on the image's PYTHONPATH via the executor).
PIP_python="websockets>=11"
PIP_nodejs=""
PIP_provided=""

# Runs once on the fresh debootstrap rootfs ($1); the result is cached as a tarball.
base_recipe() {
    local root="$1"
    cat >"$root/etc/apt/sources.list" <<SRC
deb $DEBIAN_MIRROR $SUITE main
deb $DEBIAN_MIRROR $SUITE-updates main
deb $DEBIAN_SECURITY_MIRROR $SUITE-security main
SRC
    # Keep docs, man pages and translations out of every later install (copyrights stay).
    cat >"$root/etc/dpkg/dpkg.cfg.d/01-lambda-nodoc" <<'CFG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
CFG
    cat >"$root/etc/apt/apt.conf.d/01-lambda" <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
CFG
    # The executor runs instances as 1000:1000; a passwd entry keeps os.userInfo()/getpwuid() working.
    echo 'sbx_user:x:1000:1000:lambda sandbox user:/tmp:/usr/sbin/nologin' >>"$root/etc/passwd"
    echo 'sbx_user:x:1000:' >>"$root/etc/group"
    mkdir -p "$root/var/task" "$root/var/runtime" "$root/var/log/lambda" "$root/opt/lambda"
    in_root "$root" apt-get update -qq
    in_root "$root" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o Dpkg::Use-Pty=0 dist-upgrade
}

# Runs on a copy of the cached base rootfs for one family.
family_recipe() {
    local root="$1" family="$2"
    local packages_var="PACKAGES_$family" pip_var="PIP_$family"
    in_root "$root" apt-get update -qq
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    in_root "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 \
        ${!packages_var}
    if [ -n "${!pip_var}" ]; then
        # The host's pip (python 3.11, as bookworm's) fetches cp311 manylinux wheels only, so the
        # result runs on the image's python; .pyc are compiled now because the root fs is read-only.
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            --only-binary=:all: --python-version 3.11 --implementation cp \
            --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
            --target "$root/var/lang/lambda-at-home/python" "${!pip_var}"
    fi
}

# Removes what a runtime never reads at run time. Runs with nothing mounted in the rootfs (the
# .deb cache is bind-mounted over /var/cache/apt/archives while apt runs, and must survive).
slim_rootfs() {
    local root="$1"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/archives/partial/* \
        "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/debconf/*-old \
        "$root"/var/lib/dpkg/*-old "$root"/var/log/* "$root"/tmp/* "$root/root/.cache"
    find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian
    find "$root/usr/share/locale" -mindepth 1 ! -name locale.alias -delete 2>/dev/null || true
}

# --- Machinery ---------------------------------------------------------------------------------

die() { echo "build.sh: $*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

MOUNTED=()
WORK_DIRS=()
# The log of the step running now: shown when the script fails (set -e) during that step.
CURRENT_LOG=
cleanup() {
    local status=$? i
    if [ "$status" -ne 0 ] && [ -n "$CURRENT_LOG" ]; then
        echo "build.sh: failed; last lines of $CURRENT_LOG:" >&2
        tail -n 15 "$CURRENT_LOG" >&2 || true
    fi
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTED[$i]}" 2>/dev/null || true; done
    for d in "${WORK_DIRS[@]}"; do rm -rf --one-file-system "$d"; done
}
trap cleanup EXIT

# Runs a command chrooted into $1 with /proc, /dev and the shared .deb cache mounted.
in_root() {
    local root="$1"
    shift
    if ! mountpoint -q "$root/proc"; then
        mount -t proc proc "$root/proc" && MOUNTED+=("$root/proc")
        mount --bind /dev "$root/dev" && MOUNTED+=("$root/dev")
        mkdir -p "$CACHE_DIR/debs"
        mount --bind "$CACHE_DIR/debs" "$root/var/cache/apt/archives" && MOUNTED+=("$root/var/cache/apt/archives")
        cp -L /etc/resolv.conf "$root/etc/resolv.conf"
        # No service may start inside the chroot.
        printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
        chmod +x "$root/usr/sbin/policy-rc.d"
    fi
    chroot "$root" "$@"
}

# Undoes in_root's mounts and files, so they do not end up in a tarball or image.
leave_root() {
    local root="$1" i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        case "${MOUNTED[$i]}" in "$root"/*) umount "${MOUNTED[$i]}" ;; esac
    done
    local keep=()
    for m in "${MOUNTED[@]}"; do case "$m" in "$root"/*) ;; *) keep+=("$m") ;; esac; done
    MOUNTED=("${keep[@]+"${keep[@]}"}")
    rm -f "$root/usr/sbin/policy-rc.d"
    : >"$root/etc/resolv.conf"
}

# Sets WORK_DIR to a fresh directory that is removed on exit (no subshell: WORK_DIRS must grow).
new_work_dir() {
    WORK_DIR="$(mktemp -d "$CACHE_DIR/work.XXXXXX")"
    WORK_DIRS+=("$WORK_DIR")
}

drop_work_dir() {
    local keep=() d
    rm -rf --one-file-system "$1"
    for d in "${WORK_DIRS[@]}"; do [ "$d" = "$1" ] || keep+=("$d"); done
    WORK_DIRS=("${keep[@]+"${keep[@]}"}")
}

sha256_of() { sha256sum | cut -c1-64; }

base_hash() {
    { echo "suite=$SUITE variant=minbase"; declare -f base_recipe slim_rootfs; } | sha256_of
}

family_hash() {
    local family="$1" packages_var="PACKAGES_$1" pip_var="PIP_$1"
    {
        base_hash
        echo "family=$family packages=${!packages_var} pip=${!pip_var} path=$IMAGE_PATH"
        declare -f family_recipe slim_rootfs
    } | sha256_of
}

# Sets BASE_TARBALL to the cached base rootfs tarball, building it when missing.
ensure_base_tarball() {
    BASE_TARBALL="$CACHE_DIR/rootfs-$SUITE-minbase-$(base_hash | cut -c1-16).tar"
    if [ -s "$BASE_TARBALL" ]; then
        echo "build.sh: base rootfs cached: $BASE_TARBALL"
        return
    fi
    local start root
    start="$(now)"
    new_work_dir
    root="$WORK_DIR/rootfs"
    echo "build.sh: debootstrap --variant=minbase $SUITE (from $DEBIAN_MIRROR)"
    debootstrap --variant=minbase "$SUITE" "$root" "$DEBIAN_MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $CACHE_DIR/debootstrap.log"
    CURRENT_LOG="$CACHE_DIR/debootstrap.log"
    base_recipe "$root" >>"$CURRENT_LOG" 2>&1
    CURRENT_LOG=
    leave_root "$root"
    slim_rootfs "$root"
    tar -C "$root" --numeric-owner -cf "$BASE_TARBALL.partial" .
    mv "$BASE_TARBALL.partial" "$BASE_TARBALL"
    drop_work_dir "$WORK_DIR"
    # Older base tarballs (other recipes) are never read again.
    find "$CACHE_DIR" -maxdepth 1 -name "rootfs-$SUITE-minbase-*.tar" ! -path "$BASE_TARBALL" -delete
    echo "build.sh: base rootfs built in $(elapsed "$start"): $BASE_TARBALL ($(du -h "$BASE_TARBALL" | cut -f1))"
}

image_label() {
    docker image inspect --format "{{index .Config.Labels \"$LABEL_KEY\"}}" "$1" 2>/dev/null || true
}

build_family() {
    local family="$1" force="$2" tag="lambda-at-home/$1:$SUITE" hash start root
    hash="$(family_hash "$family")"
    if [ "$force" = 0 ] && [ "$(image_label "$tag")" = "$hash" ]; then
        echo "build.sh: $tag is up to date (recipe ${hash:0:12}), skipped"
        return
    fi
    start="$(now)"
    ensure_base_tarball
    new_work_dir
    root="$WORK_DIR/rootfs"
    mkdir -p "$root"
    tar -C "$root" --numeric-owner -xf "$BASE_TARBALL"
    echo "build.sh: $tag: installing ${family} packages (log: $CACHE_DIR/build-$family.log)"
    CURRENT_LOG="$CACHE_DIR/build-$family.log"
    family_recipe "$root" "$family" >"$CURRENT_LOG" 2>&1
    CURRENT_LOG=
    leave_root "$root"
    slim_rootfs "$root"
    tar -C "$root" --numeric-owner -c . | docker import \
        --change "ENV PATH=$IMAGE_PATH" \
        --change "ENV LANG=C.UTF-8" \
        --change "WORKDIR /var/task" \
        --change "LABEL $LABEL_KEY=$hash" \
        --change "LABEL org.opencontainers.image.description=\"lambda-at-home $family runtime ($SUITE)\"" \
        - "$tag" >/dev/null
    [ "$(image_label "$tag")" = "$hash" ] || die "$tag: imported image lacks its recipe label"
    drop_work_dir "$WORK_DIR"
    echo "build.sh: $tag built in $(elapsed "$start"), $(docker image inspect --format '{{.Size}}' "$tag" |
        awk '{ printf "%.0f MB", $1 / 1e6 }') (recipe ${hash:0:12})"
}

main() {
    local force=0 families=()
    for arg in "$@"; do
        case "$arg" in
        --force) force=1 ;;
        python | nodejs | provided) families+=("$arg") ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *) die "unknown argument $arg (families: ${ALL_FAMILIES[*]})" ;;
        esac
    done
    [ "${#families[@]}" -gt 0 ] || families=("${ALL_FAMILIES[@]}")
    [ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot, mount)"
    command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap, or .ci/docker.sh)"
    docker info >/dev/null 2>&1 || die "no docker engine answers (run .ci/docker.sh)"
    mkdir -p "$CACHE_DIR"
    local start
    start="$(now)"
    for family in "${families[@]}"; do build_family "$family" "$force"; done
    echo "build.sh: done in $(elapsed "$start")"
}

main "$@"
