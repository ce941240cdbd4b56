#!/usr/bin/env bash
# The test suite, from a fresh machine: installs what it needs, starts the databases, runs pytest.
#
#   scripts/test.sh          the fast default: every test but those marked `slow` or `peer`
#   scripts/test.sh --all    all of them, measured by coverage (line and branch, subprocesses included), failing
#                            below `fail_under` in pyproject.toml; CI=true (as `.ci/run` sets) implies --all
#
# Other arguments go to pytest (a `-m` of your own replaces the default's marker selection).
set -euo pipefail
cd "$(dirname "$0")/.."
all=false
case "${CI:-}" in "" | false | 0) ;; *) all=true ;; esac
args=()
for arg in "$@"; do
    if [ "$arg" = --all ]; then all=true; else args+=("$arg"); fi
done
scripts/bootstrap.sh
scripts/services.sh
case "${CI:-}" in "" | false | 0) ;; *) scripts/browsers.sh ;; esac  # in CI the browser tests fail, never skip
if [ "$all" = false ]; then
    exec .venv/bin/python -m pytest -m "not slow and not peer" ${args[@]+"${args[@]}"}
fi
export COVERAGE_FILE="$PWD/.coverage"
.venv/bin/python -m coverage erase
status=0
.venv/bin/python -m coverage run -m pytest ${args[@]+"${args[@]}"} || status=$?
.venv/bin/python -m coverage combine --quiet || true
.venv/bin/python -m coverage report || { [ "$status" -ne 0 ] || status=1; }
exit "$status"
