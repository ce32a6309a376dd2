#!/usr/bin/env bash
# One sandbox launch with runc, as README "Running in a sandbox" shows it:
# the per-launch key goes through a pipe and never touches a disk, and the
# host's copy of the bundle is deleted as soon as sealinit has read it.
#
#   runc-launch.sh REPO ID OCI_DIR
#
# OCI_DIR was laid out once with
#   container/oci/make-bundle.sh OCI_DIR OCI_DIR/secrets/sealinit.bundle \
#       --sealinit-arg --ready-fd=4 -- agent serve
# The store comes from SEALCTL_STORE and SEALCTL_MASTER_KEY.
set -euo pipefail
repo=$1 id=$2 dir=$3
mkfifo "$dir/ready"
# sealctl writes the bundle, then the fresh key into the pipe; runc hands
# the pipe to sealinit as fd 3 and the ready FIFO as fd 4.
sealctl seal --repo "$repo" --out "$dir/secrets/sealinit.bundle" --key-out-fd 5 5>&1 >/dev/null \
    | runc run --preserve-fds 2 -b "$dir" "$id" 3<&0 0</dev/null 4>"$dir/ready" &
launched=$!
# "ready" once the agent runs, or "error CODE REASON" from sealinit.
read -r status < "$dir/ready" || status="error: sealinit said nothing"
rm -f "$dir/secrets/sealinit.bundle" "$dir/ready"
echo "runc-launch: sealinit: $status" >&2
wait "$launched"    # the container's status: the agent's
