#!/usr/bin/env bash
# End to end on one machine: create an encrypted store, seed an example
# repository from examples/demo.env, then `sealctl run` a command that
# proves the secrets arrived (lengths and a checksum), never printing them.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --release --bins
bin=$PWD/target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export SEALCTL_STORE=$work/store/store.db SEALCTL_MASTER_KEY=$work/master.key

"$bin/sealctl" store init
"$bin/sealctl" secrets set --repo example/demo --from-env-file examples/demo.env
printf '%s' "ghp_example$(date +%s)" | "$bin/sealctl" secrets set --repo example/demo GITHUB_TOKEN
"$bin/sealctl" secrets list --repo example/demo

echo "--- sealctl run: fresh key on fd 3, one-use bundle, sealinit as PID 1 of a new PID namespace"
# shellcheck disable=SC2016
"$bin/sealctl" run --repo example/demo --pid-namespace -- sh -c '
    echo "I am PID $$ under $(cat /proc/1/comm)"
    for name in DATABASE_URL STRIPE_API_KEY FEATURE_FLAGS; do
        eval "got=\${$name}"
        want=$(. ./examples/demo.env; eval "printf %s \"\${$name}\"")
        [ "$got" = "$want" ] && same=yes || same=NO
        printf "%-15s %3d characters, equal to examples/demo.env: %s\n" "$name" "${#got}" "$same"
    done
    echo "GITHUB_TOKEN    ${#GITHUB_TOKEN} characters"
    printf "SEALINIT_* variables seen: "
    env | grep -c "^SEALINIT_" || true
    exit 3' || echo "--- the command's exit status came back through sealinit and sealctl: $?"
