#!/usr/bin/env bash
# The PyPI tools the tests use, in a virtual environment of their own
# (target/py-tools), made once: an OpenAPI validator and schemathesis,
# which check the service's OpenAPI document and fuzz a live server
# against it. Prints the venv's bin directory. Run by .ci/run, and by the
# test that needs them if it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/py-tools
want="schemathesis==4.32.5 openapi-spec-validator==0.9.0"
if [ ! -f "$venv/.done" ] || [ "$(cat "$venv/.done")" != "$want" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $want >&2
    echo "$want" > "$venv/.done"
fi
echo "$PWD/$venv/bin"
