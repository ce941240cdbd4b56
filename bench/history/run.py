"""Every history and console benchmark, one after the other: `.venv/bin/python bench/history/run.py [--quick]`.

Runs `latency.py` (a task endpoint with history on and off, in-process), `latency_http.py` (the same over
loopback HTTP, one uvicorn process per side), `writes.py` (8 worker processes writing into one PostgreSQL) and
`render.py` (each console page over 100,000 history rows and 10,000 pending tasks), each in its own process so
that one's threads and caches never slow another, and prints their tables in that order.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

QUICK = {
    "latency.py": ["--requests", "1000", "--warmup", "100"],
    "latency_http.py": ["--requests", "1000", "--warmup", "100"],
    "writes.py": ["--quick"],
    "render.py": ["--tasks", "20000", "--pending", "2000", "--runs", "5"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, about a minute in all")
    args = parser.parse_args()
    status = 0
    for script in ("latency.py", "latency_http.py", "writes.py", "render.py"):
        print(f"\n## {script}\n", flush=True)
        command = [sys.executable, str(HERE / script), *(QUICK[script] if args.quick else [])]
        status = max(status, subprocess.run(command, check=False).returncode)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
