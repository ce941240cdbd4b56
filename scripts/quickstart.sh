#!/usr/bin/env bash
# The main job: the example app on the embedded emulator, with tasks visibly executing (Ctrl-C to stop).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m examples.simple "$@"
