#!/usr/bin/env bash
# Lays out an OCI bundle for runc: a busybox rootfs (busybox-static) with the
# static sealinit at /sbin/sealinit, and a config.json in which the sealed
# bundle's directory is bind-mounted read-only at /run/secrets and
# process.args start with sealinit --bundle /run/secrets/NAME.
#
#   make-bundle.sh DIR SEALED_BUNDLE [--work HOSTDIR] [--sealinit-arg ARG]... -- COMMAND [ARG]...
#
# The directory, not the file, is mounted: the bundle need not exist yet
# when the container is created (it may be sealed while the container
# starts), and once the host deletes it the container cannot see it either.
# Keep nothing else in that directory.
#
# --work HOSTDIR is bind-mounted read-write at /work (for test results).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

dir=$1 sealed=$2
shift 2
work="" extra=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case $1 in
        --work) work=$2; shift 2 ;;
        --sealinit-arg) extra+=("$2"); shift 2 ;;
        *) echo "make-bundle.sh: unknown option $1" >&2; exit 64 ;;
    esac
done
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "make-bundle.sh: missing COMMAND" >&2; exit 64; }

sealinit=${SEALINIT_STATIC:-$here/../../$(bash "$here/../build.sh" | tail -1 | cut -d" " -f1)}
busybox=$(command -v busybox)
rootfs=$dir/rootfs
mkdir -p "$rootfs"/{bin,sbin,proc,dev,sys,tmp,work,etc,run/secrets}
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
cp "$sealinit" "$rootfs/sbin/sealinit"
secrets_dir=$(realpath -m "$(dirname "$sealed")")
bundle_name=$(basename "$sealed")
mkdir -p "$secrets_dir"
echo "root:x:0:0:root:/:/bin/sh" > "$rootfs/etc/passwd"

json_string() { # a JSON string literal for $1
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\t'/\\t}
    printf '"%s"' "$s"
}
args=$(json_string /sbin/sealinit)
for a in --bundle "/run/secrets/$bundle_name" ${extra[@]+"${extra[@]}"} -- "$@"; do
    args+=", $(json_string "$a")"
done
work_mount=""
if [ -n "$work" ]; then
    work_mount=", {\"destination\": \"/work\", \"type\": \"bind\", \"source\": $(json_string "$work"), \"options\": [\"rbind\", \"rw\"]}"
fi

cat > "$dir/config.json" <<JSON
{
  "ociVersion": "1.0.2",
  "process": {
    "terminal": false,
    "user": {"uid": 0, "gid": 0},
    "args": [$args],
    "env": ["PATH=/bin:/sbin", "HOME=/"],
    "cwd": "/",
    "capabilities": {
      "bounding": ["CAP_KILL", "CAP_SETUID", "CAP_SETGID"],
      "effective": ["CAP_KILL", "CAP_SETUID", "CAP_SETGID"],
      "permitted": ["CAP_KILL", "CAP_SETUID", "CAP_SETGID"]
    },
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    "noNewPrivileges": true
  },
  "root": {"path": "rootfs", "readonly": true},
  "hostname": "sandbox",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
    {"destination": "/run/secrets", "type": "bind", "source": $(json_string "$secrets_dir"), "options": ["rbind", "ro"]}$work_mount
  ],
  "linux": {
    "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
    "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
    "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
  }
}
JSON
