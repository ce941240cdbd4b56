#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, starts the databases, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/services.sh
.venv/bin/python -m pytest "$@"
