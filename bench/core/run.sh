#!/usr/bin/env bash
# One run, side by side: the hand-built floor, this repository, and fastapi-gcp-tasks 0.3.4 (own venv).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PEER="$ROOT/bench/.venv-peer-gcp-tasks"
if [ ! -x "$PEER/bin/python" ]; then
    python3 -m venv "$PEER"
    "$PEER/bin/python" -m pip install --quiet --disable-pip-version-check uv
    "$PEER/bin/uv" pip install --python "$PEER/bin/python" --quiet "fastapi-gcp-tasks==0.3.4"
fi
OUT="$(mktemp)"
cd "$HERE"
"$ROOT/.venv/bin/python" delay_cost.py floor ours checked >>"$OUT"
"$PEER/bin/python" delay_cost.py peer >>"$OUT"
"$ROOT/.venv/bin/python" delay_cost.py floor >>"$OUT"
"$ROOT/.venv/bin/python" - "$OUT" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
floor = min(r["us_per_call"] for r in rows if r["mode"] == "floor")
ours = next(r for r in rows if r["mode"] == "ours")
checked = next(r for r in rows if r["mode"] == "checked")
peer = next(r for r in rows if r["mode"] == "peer")
print(f"{'mode':<58}{'µs / .delay()':>14}{'x floor':>9}{'RPCs':>6}")
for label, r in (("hand-built CreateTaskRequest (floor)", {"us_per_call": floor, "rpcs_per_call": 1.0}),
                 ("fastapi-gcp-tasks (this repository), types proven", ours),
                 ("fastapi-gcp-tasks (this repository), per-call check", checked),
                 ("fastapi-gcp-tasks 0.3.4 (PyPI)", peer)):
    print(f"{label:<58}{r['us_per_call']:>14.1f}{r['us_per_call'] / floor:>9.2f}{r['rpcs_per_call']:>6.0f}")
print(f"speed-up over 0.3.4: {peer['us_per_call'] / ours['us_per_call']:.2f}x (types proven), "
      f"{peer['us_per_call'] / checked['us_per_call']:.2f}x (per-call check)")
print(f"load average: {open('/proc/loadavg').read().split()[0]} (2 cores)")
PY
