#!/usr/bin/env bash
# The PyPI tools the tests use, in a virtual environment of their own
# (target/py-tools), made once: an OpenAPI validator and schemathesis,
# which check the service's OpenAPI document and fuzz a live server
# against it; PyGithub, a client of the GitHub-shaped API. Prints the
# venv's bin directory. Run by .ci/run, and by the tests that need them if
# it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/py-tools
want="schemathesis==4.32.5 openapi-spec-validator==0.9.0 PyGithub==2.5.0"
# One maker at a time (tests that need the tools may run at once).
mkdir -p target
exec 9>target/py-tools.lock
flock 9
# Bumped when the fix below changes, so that existing venvs are rebuilt.
fixes=2
if [ ! -f "$venv/.done" ] || [ "$(cat "$venv/.done")" != "$want fixes=$fixes" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $want >&2
    # Python 3.11 (3.11.7 here) can raise SystemError "AST constructor
    # recursion depth mismatch" from ast.parse deep in a stack (CPython
    # gh-106905). Hypothesis parses a module's source only to name a lambda
    # in a strategy's repr, and the error then fails whole schemathesis
    # operations as "Runtime Error": such a lambda is named "<unknown>".
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    cat > "$site/sealinit_tool_fixes.py" <<'PY'
try:
    from hypothesis.internal import lambda_sources as _sources
except ImportError:
    _sources = None
if _sources is not None:
    _describe = _sources._lambda_description

    def _lambda_description(f, *args, **kwargs):
        try:
            return _describe(f, *args, **kwargs)
        except SystemError:
            return "lambda: <unknown>"

    _sources._lambda_description = _lambda_description
PY
    echo "import sealinit_tool_fixes" > "$site/sealinit_tool_fixes.pth"
    echo "$want fixes=$fixes" > "$venv/.done"
fi
echo "$PWD/$venv/bin"
