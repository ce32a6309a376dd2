#!/usr/bin/env bash
# Builds sealinit as a static-pie executable (gnu target, crt-static,
# release, LTO, stripped, RELR-packed relocations: fewer pages read at
# start-up) that runs in a scratch container, and prints its
# path and size.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
RUSTFLAGS='-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs' \
    cargo build --locked --quiet --release --target "$target" --bin sealinit
out=target/$target/release/sealinit
if ldd "$out" 2>&1 | grep -q '=>'; then
    echo "error: $out is dynamically linked" >&2
    exit 1
fi
echo "$out $(stat -c %s "$out") bytes (static-pie, stripped)"
