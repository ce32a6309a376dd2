#!/usr/bin/env bash
# Fails when the init links a crate outside the allowed set: what the
# `sealinit` package links (its normal dependencies, proc macros aside)
# must stay what Cargo.toml (the root package) lists and justifies. The
# orchestrator's crates (the store, SQLite, clap, tempfile, getrandom, a
# Postgres client, tokio, an HTTP server) must never appear here.
set -euo pipefail
cd "$(dirname "$0")/.."

allowed='
aead aho-corasick bitflags cfg-if chacha20 chacha20poly1305 cipher
cpufeatures crypto-common generic-array inout itoa lexopt libc memchr nix
once_cell opaque-debug pin-project-lite poly1305 sealinit sealinit-core
sealinit-mask sealinit-sys serde serde_core serde_json subtle thiserror
tracing tracing-core typenum universal-hash zeroize zmij
'
linked=$(cargo tree --locked -p sealinit -e normal,no-proc-macro --prefix none --format '{p}' \
    | sed 's/ (.*//; s/ v[0-9].*//' | sort -u)
bad=()
for crate in $linked; do
    case " $(echo $allowed) " in
        *" $crate "*) ;;
        *) bad+=("$crate") ;;
    esac
done
if [ ${#bad[@]} -gt 0 ]; then
    echo "error: the init (crate sealinit) now links: ${bad[*]}" >&2
    echo "justify each in Cargo.toml (the root package) and add it to .ci/init-deps.sh, or keep it out of the init" >&2
    exit 1
fi
echo "init dependencies: $(echo $linked | wc -w) crates, all allowed"
