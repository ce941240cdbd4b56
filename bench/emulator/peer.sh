#!/usr/bin/env bash
# Creates bench/.venv-peer-emulator with gcloud-tasks-emulator 0.6.2 (it pins protobuf<5, so it cannot share the project venv).
# Idempotent; prints the venv's python path on success.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/bench/.venv-peer-emulator"
uv="$root/.venv/bin/uv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import gcloud_tasks_emulator" 2>/dev/null; then
    "$uv" venv --quiet --python 3.11 "$venv" >&2
    "$uv" pip install --quiet --python "$venv/bin/python" "gcloud-tasks-emulator==0.6.2" >&2
fi
echo "$venv/bin/python"
