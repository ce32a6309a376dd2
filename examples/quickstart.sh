#!/usr/bin/env bash
# End to end on one machine: create an encrypted store, seed an example
# repository from examples/demo.env, then `sealctl run` a command that
# proves the secrets arrived (lengths and a checksum), never printing them.
set -euo pipefail
cd "$(dirname "$0")/.."

# SEALCTL_BIN_DIR: use binaries built already (the tests do) instead of
# building them.
if [ -n "${SEALCTL_BIN_DIR:-}" ]; then
    bin=$SEALCTL_BIN_DIR
else
    cargo build --quiet --release --bins
    bin=$PWD/target/release
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export SEALCTL_STORE=$work/store/store.db SEALCTL_MASTER_KEY=$work/master.key

"$bin/sealctl" store init
"$bin/sealctl" repos create example/demo
"$bin/sealctl" secrets set --repo example/demo --from-env-file examples/demo.env
printf '%s' "ghp_example$(date +%s)" | "$bin/sealctl" secrets set --repo example/demo GITHUB_TOKEN
"$bin/sealctl" secrets list --repo example/demo

# As root, sealinit runs as PID 1 of a new PID namespace; unprivileged
# users cannot make one, so then sealctl execs sealinit directly (still the
# same per-launch bundle and key pipe).
ns=(--pid-namespace)
where="as PID 1 of a new PID namespace"
if [ "$(id -u)" -ne 0 ]; then
    ns=()
    where="directly (not root: no PID namespace)"
fi
echo "--- sealctl run: fresh key on fd 3, per-launch bundle, sealinit $where"
# The command exits 3 when every secret arrived intact, 1 otherwise.
rc=0
# shellcheck disable=SC2016
"$bin/sealctl" run --repo example/demo "${ns[@]}" -- sh -c '
    echo "I am PID $$ under $(cat /proc/1/comm 2>/dev/null || echo "?")"
    ok=3
    for name in DATABASE_URL STRIPE_API_KEY FEATURE_FLAGS; do
        eval "got=\${$name}"
        want=$(. ./examples/demo.env; eval "printf %s \"\${$name}\"")
        if [ "$got" = "$want" ]; then same=yes; else same=NO; ok=1; fi
        printf "%-15s %3d characters, equal to examples/demo.env: %s\n" "$name" "${#got}" "$same"
    done
    echo "GITHUB_TOKEN    ${#GITHUB_TOKEN} characters"
    printf "SEALINIT_* variables seen: "
    env | grep -c "^SEALINIT_" || true
    exit $ok' || rc=$?
if [ "$rc" -ne 3 ]; then
    echo "quickstart FAILED: expected the command's status 3 back through sealinit and sealctl, got $rc" >&2
    exit 1
fi
echo "--- the command's exit status came back through sealinit and sealctl: $rc"
echo "quickstart OK"
