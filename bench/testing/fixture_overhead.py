"""Per-test cost of the plugin's emulator fixtures: `python bench/testing/fixture_overhead.py [N]`.

Runs N trivial tests three times in a pytest subprocess each: with no fixture, with `gcp_tasks_shared_emulator`
and with `gcp_tasks_emulator`, and prints the wall time per test of each and the difference to no fixture.
The tests do nothing else, so the difference is the fixture's own cost (start, point the clients, stop or reset).
Then the same set-up and tear-down without pytest, in-process, repeated N times.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST = """
import pytest

import fastapi_gcp_tasks.emulator  # imported in every variant: its one-time cost (about 0.7 s) is no fixture's
import fastapi_gcp_tasks.testing._env

@pytest.mark.parametrize("i", range({n}))
def test_it(i{fixture}):
    pass
"""


def run(n: int, fixture: str) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "test_bench.py"
        path.write_text(TEST.format(n=n, fixture=f", {fixture}" if fixture else ""))
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:asyncio", str(path)]
        started = time.perf_counter()
        subprocess.run(command, cwd=folder, check=True, capture_output=True)
        return time.perf_counter() - started


def in_process(n: int) -> None:
    from fastapi_gcp_tasks.emulator import Emulator
    from fastapi_gcp_tasks.testing import use_emulator

    started = time.perf_counter()
    for _ in range(n):
        with Emulator(port=0) as emulator, use_emulator(emulator):
            pass
    fresh = time.perf_counter() - started
    with Emulator(port=0) as emulator:
        started = time.perf_counter()
        for _ in range(n):
            emulator.is_idle()
            emulator.reset()
            with use_emulator(emulator):
                pass
        shared = time.perf_counter() - started
    print("in-process set-up and tear-down per test")
    print(f"  gcp_tasks_shared_emulator  {shared / n * 1000:7.3f} ms")
    print(f"  gcp_tasks_emulator         {fresh / n * 1000:7.3f} ms")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    base = run(n, "")
    print(f"{n} tests; wall time per test, and the fixture's cost per test")
    print(f"  no fixture                 {base / n * 1000:7.2f} ms")
    for fixture in ("gcp_tasks_shared_emulator", "gcp_tasks_emulator"):
        total = run(n, fixture)
        print(f"  {fixture:26} {total / n * 1000:7.2f} ms   +{(total - base) / n * 1000:6.2f} ms")
    in_process(n)


if __name__ == "__main__":
    main()
