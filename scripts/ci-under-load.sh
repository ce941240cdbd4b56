#!/usr/bin/env bash
# The flake check: `.ci/run` on a clean clone of this repository's HEAD while a CPU-burning process runs on every
# core, RUNS times in a row (default 3), stopping at the first failing run.
#
#   scripts/ci-under-load.sh [RUNS]        BURNERS=n sets the number of burning processes (default: the core count)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
runs="${1:-3}"
burners=()
stop_burners() {
    for pid in ${burners[@]+"${burners[@]}"}; do kill "$pid" 2>/dev/null || true; done
}
trap stop_burners EXIT
for _ in $(seq "${BURNERS:-$(nproc)}"); do
    python3 -c 'while True: pass' &
    burners+=("$!")
done
for run in $(seq "$runs"); do
    clone="$(mktemp -d)/ci-check"
    git clone -q "$repo" "$clone"
    echo "== run $run of $runs: $clone at $(git -C "$clone" rev-parse --short HEAD), ${#burners[@]} burning processes"
    started=$SECONDS
    (cd "$clone" && CI=true bash .ci/run)
    echo "== run $run of $runs passed in $((SECONDS - started)) s"
    rm -rf "$(dirname "$clone")"
done
