#!/usr/bin/env bash
# One sandboxed launch with bubblewrap, as README "Running in a sandbox"
# shows it. The agent gets /usr read-only, a few files of /etc that
# programs read, fresh /proc, /dev, /tmp and /run, a cleared environment,
# no network but its own loopback, and its secrets: nothing of this
# machine's (no home directory, keys, token files, store or sockets). The
# per-launch key goes through a pipe and never touches a disk; sealinit
# unlinks the bundle once read.
#
#   bwrap-launch.sh REPO COMMAND [ARGS...]
#
# The store comes from SEALCTL_STORE and SEALCTL_MASTER_KEY (or
# SEALCTL_SERVER and SEALCTL_TOKEN); sealinit is found on PATH.
set -euo pipefail
repo=$1
shift
dir=$(mktemp -d) # 0700: the bundle is this user's alone
trap 'rm -rf "$dir"' EXIT
# sealctl writes the bundle, then the fresh key into the pipe; bwrap hands
# the pipe to sealinit as fd 3; sealinit reads the key, then the bundle.
sealctl seal --repo "$repo" --out "$dir/bundle" --key-out-fd 3 3>&1 >/dev/null |
    bwrap --unshare-all --die-with-parent --as-pid-1 \
        --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/sbin /sbin \
        --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
        --ro-bind-try /etc/passwd /etc/passwd --ro-bind-try /etc/group /etc/group \
        --ro-bind-try /etc/ssl /etc/ssl --ro-bind-try /etc/alternatives /etc/alternatives \
        --proc /proc --dev /dev --tmpfs /tmp --tmpfs /run \
        --ro-bind "$(command -v sealinit)" /init --bind "$dir" /run/sealinit \
        --clearenv --setenv PATH /usr/bin:/bin --setenv HOME /tmp --chdir /tmp \
        /init --bundle /run/sealinit/bundle --remove-bundle --expect-repo "$repo" \
        --key-fd 3 -- "$@" 3<&0 0</dev/null
