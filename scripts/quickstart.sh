#!/usr/bin/env bash
# The main job: the example app on the embedded emulator, with tasks visibly executing (Ctrl-C to stop).
# Arguments go to `python -m examples.simple`: `--port N` (default 8000, or $PORT) and `--once`.
# A taken port is reported at once (exit status 1), never waited on.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m examples.simple "$@"
