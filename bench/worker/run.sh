#!/usr/bin/env bash
# Worker-side benchmark: OIDC verification (ours, its previous hand-written version, google-auth, PyJWT)
# and trace propagation.
# Creates bench/.venv-peer (git-ignored) with the peers on first use, then runs everything in one go.
set -euo pipefail
cd "$(dirname "$0")/../.."
PEER=bench/.venv-peer
if [ ! -x "$PEER/bin/python" ]; then
    .venv/bin/uv venv --quiet --python 3.11 "$PEER"
fi
.venv/bin/uv pip install --quiet --python "$PEER/bin/python" "google-auth==2.*" "requests==2.*" "PyJWT[crypto]==2.*"
.venv/bin/python bench/worker/bench.py --peer-python "$PEER/bin/python" "$@"
