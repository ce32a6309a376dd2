#!/usr/bin/env bash
# The peers the benchmarks compare against, installed once: tinyproxy and
# tini & co from Debian, and mitmproxy (PyPI) in a virtual environment of
# its own (target/bench-tools). Not run by CI (benchmarks are not tests);
# run it before `cargo bench`. Prints the venv's bin directory.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in tinyproxy tini dumb-init catatonit; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update >&2
    apt-get install -y --no-install-recommends "${need[@]}" >&2
fi
venv=target/bench-tools
want="mitmproxy==11.0.2"
if [ ! -f "$venv/.done" ] || [ "$(cat "$venv/.done")" != "$want" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $want >&2
    echo "$want" > "$venv/.done"
fi
echo "$PWD/$venv/bin"
