#!/usr/bin/env bash
# The npm tools of the page's browser tests, in a folder of their own
# (target/page-tools), made once: axe-core, the accessibility checker the
# tests inject into every page state through WebDriver. Prints the path of
# axe.min.js. Run by .ci/run, and by the tests that need it if it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/page-tools
want="axe-core@4.10.2"
mkdir -p target
exec 9>target/page-tools.lock
flock 9
if [ ! -f "$dir/.done" ] || [ "$(cat "$dir/.done")" != "$want" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --silent "$want" >&2
    echo "$want" > "$dir/.done"
fi
echo "$PWD/$dir/node_modules/axe-core/axe.min.js"
