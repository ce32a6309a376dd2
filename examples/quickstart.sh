#!/usr/bin/env bash
# End-to-end example: generate a key, seal examples/demo.env, and run a
# command under sealinit that shows each secret's length, never its value.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --release --bins
bin=target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$bin/sealctl" keygen --out "$work/key"
"$bin/sealctl" seal --key "$work/key" --out "$work/demo.bundle" \
    --from-env-file examples/demo.env --label example/demo --ttl 15m
"$bin/sealctl" inspect "$work/demo.bundle" --key "$work/key"

echo "--- the command, started by sealinit with the key on fd 3:"
# shellcheck disable=SC2016
"$bin/sealinit" --bundle "$work/demo.bundle" -- sh -c '
    echo "DATABASE_URL has ${#DATABASE_URL} characters"
    echo "STRIPE_API_KEY has ${#STRIPE_API_KEY} characters"
    echo "FEATURE_FLAGS has ${#FEATURE_FLAGS} characters"
    exit 3' 3<"$work/key" || echo "--- sealinit passed on the command's exit status: $?"
