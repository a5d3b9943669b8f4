#!/usr/bin/env bash
# CI: makes the Terraform end-to-end test (tests/terraform.rs) runnable, or says exactly what is
# missing. Source it (`. .ci/terraform.sh`) so the exports reach the test run.
#
# Nothing is downloaded: CI's machine image provides the terraform CLI (>= 1.5, on PATH or named
# by LAH_TERRAFORM) and an unpacked filesystem mirror of the hashicorp/aws provider 5.x
# (registry.terraform.io/hashicorp/aws/<version>/<os>_<arch>/). The image keeps that mirror in
# /opt/tf-plugins; LAH_TF_PROVIDER_MIRROR, when already set, names another one. On success this
# exports LAH_TERRAFORM, LAH_TF_PROVIDER_MIRROR and LAH_REQUIRE_TERRAFORM=1 (the test then fails
# instead of skipping); otherwise it prints what is missing and returns 1.

lah_tf_check() {
    local image_mirror=/opt/tf-plugins
    local platform missing=""
    platform="$(uname -s | tr '[:upper:]' '[:lower:]')_$(uname -m | sed -e 's/^x86_64$/amd64/' -e 's/^aarch64$/arm64/')"

    local terraform="${LAH_TERRAFORM:-terraform}"
    if ! command -v "$terraform" >/dev/null 2>&1; then
        missing="$missing\n  - the terraform CLI ('$terraform' is not on PATH; set LAH_TERRAFORM to its path)"
    elif ! CHECKPOINT_DISABLE=1 "$terraform" version >/dev/null 2>&1; then
        missing="$missing\n  - a working terraform CLI ('$terraform version' fails)"
    fi

    local mirror="${LAH_TF_PROVIDER_MIRROR:-$image_mirror}"
    local found=""
    for dir in "$mirror"/registry.terraform.io/hashicorp/aws/5.*/"$platform"; do
        [ -d "$dir" ] && found="$dir"
    done
    if [ -z "$found" ]; then
        missing="$missing\n  - the hashicorp/aws 5.x provider for $platform in a filesystem mirror: no $mirror/registry.terraform.io/hashicorp/aws/5.*/$platform/ (set LAH_TF_PROVIDER_MIRROR to the mirror's root)"
    fi

    if [ -n "$missing" ]; then
        printf 'terraform.sh: the Terraform test cannot run; missing:%b\n' "$missing" >&2
        return 1
    fi
    export LAH_TERRAFORM="$(command -v "$terraform")"
    export LAH_TF_PROVIDER_MIRROR="$mirror"
    export LAH_REQUIRE_TERRAFORM=1
    echo "terraform.sh: $("$LAH_TERRAFORM" version 2>/dev/null | head -n 1); provider $(basename "$(dirname "$found")") from $mirror"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    # Run directly: only report.
    lah_tf_check
    exit $?
fi
lah_tf_check
