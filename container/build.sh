#!/usr/bin/env bash
# Builds sealinit as a static-pie executable for containers, with the init's
# own profile (release-init: LTO, panic=abort, small code, stripped) and
# RELR-packed relocations (fewer pages touched at start-up):
#   - musl (smaller, and what Alpine images run) when the
#     x86_64-unknown-linux-musl target is installed
#     (`rustup target add x86_64-unknown-linux-musl`);
#   - glibc otherwise (or with SEALINIT_LIBC=gnu).
# Only the `sealinit` package is built (`-p`), so no feature of the
# orchestrator's crates can reach the init. The last line printed is
# "PATH SIZE bytes (static-pie, LIBC)".
set -euo pipefail
cd "$(dirname "$0")/.."

want=${SEALINIT_LIBC:-auto}
have_musl=false
if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    have_musl=true
fi
case "$want:$have_musl" in
    musl:false)
        echo "error: SEALINIT_LIBC=musl, but the musl target is not installed; run: rustup target add x86_64-unknown-linux-musl" >&2
        exit 1 ;;
    gnu:*|auto:false) target=x86_64-unknown-linux-gnu libc=glibc ;;
    *) target=x86_64-unknown-linux-musl libc=musl ;;
esac
if [ "$want" = auto ] && [ "$libc" = glibc ]; then
    echo "note: the musl target is not installed; building the glibc static-pie (rustup target add x86_64-unknown-linux-musl for a smaller binary)" >&2
fi
RUSTFLAGS='-C target-feature=+crt-static -C relocation-model=pie -C link-arg=-Wl,-z,pack-relative-relocs' \
    cargo build --locked --quiet --profile release-init -p sealinit --bin sealinit --target "$target"
out=target/$target/release-init/sealinit
if readelf -d "$out" 2>/dev/null | grep -q NEEDED; then
    echo "error: $out is dynamically linked" >&2
    exit 1
fi
echo "$out $(stat -c %s "$out") bytes (static-pie, $libc)"
