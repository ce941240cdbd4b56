#!/usr/bin/env bash
# Instructions the emulator executes per delivered task, counted by callgrind during the drain only
# (deterministic within about 1%, unlike CPU time on a shared machine). Usage: bench/emulator/callgrind.sh [TASKS]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tasks="${1:-1000}"
out="$(mktemp -d)"
cd "$root"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/callgrind.out" \
    .venv/bin/python bench/emulator/profile_drain.py --tasks "$tasks" --callgrind 2>"$out/valgrind.log" >/dev/null
total="$(grep -oP 'Collected : \K[0-9]+' "$out/valgrind.log")"
echo "$tasks tasks: $((total / tasks)) instructions per delivered task (callgrind output: $out/callgrind.out)"
