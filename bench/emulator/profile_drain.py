"""The emulator's CPU per delivered task, measured in-process by CPU time, with an optional profile.

Wall time on this shared machine moves with other jobs; the CPU the emulator spends per delivered task
does not. This script runs the Cloud Tasks dispatcher (`TasksService`, delivering over `HttpDeliverer`
wrapped like the CLI's, records kept: 0) in this process against the benchmark's worker in its own
process, fills 16 paused queues with `--tasks` tasks (3 concurrent dispatches each, 48 in flight as in
`bench.py`'s drain), resumes them all and reads the process's user and system CPU (`getrusage`) from the
resume until every task is gone. Creating the tasks is outside the measured window.

    .venv/bin/python bench/emulator/profile_drain.py --tasks 4000 --runs 3
    .venv/bin/python bench/emulator/profile_drain.py --tasks 3000 --profile   # cProfile, by own time
    bench/emulator/callgrind.sh 1000                                           # instructions, under valgrind

With `--profile` the CPU per task includes cProfile's overhead; use the call counts and the shares.
`--callgrind` (used by `callgrind.sh`) switches valgrind's instrumentation on for the drain only.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from google.cloud import tasks_v2
from google.protobuf import field_mask_pb2

from fastapi_gcp_tasks.emulator._clock import SystemClock
from fastapi_gcp_tasks.emulator._delivery import HttpDeliverer, RecordingDeliverer
from fastapi_gcp_tasks.emulator._tasks_service import TasksService

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import CONCURRENCY, HERE, QUEUES, free_port, running

_BODY = json.dumps({"t": 0}).encode()


def _callgrind(state: str) -> None:
    """Switch instruction counting on or off when this process runs under `valgrind --tool=callgrind`."""
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


async def drain_once(
    worker: str, count: int, profiler: cProfile.Profile | None, *, callgrind: bool = False
) -> tuple[float, float, float, int]:
    """(user CPU seconds, system CPU seconds, wall seconds, connections opened) to deliver `count` tasks."""
    clock = SystemClock()
    inner = HttpDeliverer()
    service = TasksService(
        clock=clock, deliverer=RecordingDeliverer(inner, clock, keep=0), queues=QUEUES, tombstone_seconds=3600
    )
    await service.start()
    limits = tasks_v2.RateLimits(max_concurrent_dispatches=CONCURRENCY // len(QUEUES))
    mask = field_mask_pb2.FieldMask(paths=["rate_limits.max_concurrent_dispatches"])
    for queue in QUEUES:
        service.pause_queue(tasks_v2.PauseQueueRequest(name=queue)._pb)
        service.update_queue(
            tasks_v2.UpdateQueueRequest(queue=tasks_v2.Queue(name=queue, rate_limits=limits), update_mask=mask)._pb
        )
    template = tasks_v2.Task(
        http_request=tasks_v2.HttpRequest(
            url=f"{worker}/task", body=_BODY, headers={"Content-Type": "application/json"}
        )
    )._pb
    for index in range(count):
        request = tasks_v2.CreateTaskRequest(parent=QUEUES[index % len(QUEUES)])._pb
        request.task.CopyFrom(template)
        service.create_task(request)
    done = asyncio.get_running_loop().create_future()

    def check() -> None:
        if all(not service._queues[queue].tasks for queue in QUEUES):
            done.set_result(None)
        else:
            asyncio.get_running_loop().call_later(0.005, check)

    if profiler is not None:
        profiler.enable()
    if callgrind:
        _callgrind("on")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    for queue in QUEUES:
        service.resume_queue(tasks_v2.ResumeQueueRequest(name=queue)._pb)
    check()
    await done
    wall = time.perf_counter() - wall
    if callgrind:
        _callgrind("off")
    after = resource.getrusage(resource.RUSAGE_SELF)
    user, system = after.ru_utime - usage.ru_utime, after.ru_stime - usage.ru_stime
    if profiler is not None:
        profiler.disable()
    failed = [record for record in service.deliveries if not record.ok]
    assert not failed, failed[:3]
    opened = inner.connections_opened
    await service.stop()
    await inner.aclose()
    return user, system, wall, opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="run once under cProfile and print the top entries")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="run once, counting instructions only during the drain (run under valgrind, see the docstring)",
    )
    args = parser.parse_args()
    port = free_port()
    worker = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "worker:app",
        "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    with running(command, port):
        asyncio.run(drain_once(worker, 500, None))  # warm up: imports, caches, the worker's first requests
        if args.callgrind:
            asyncio.run(drain_once(worker, args.tasks, None, callgrind=True))
            print(f"{args.tasks} tasks drained; instructions: callgrind_annotate <out file> | head")
            return
        if args.profile:
            profiler = cProfile.Profile()
            user, system, _, opened = asyncio.run(drain_once(worker, args.tasks, profiler))
            per_task = 1000 * (user + system) / args.tasks
            print(f"{args.tasks} tasks: {per_task:.4f} ms CPU per task under cProfile, {opened} connections")
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(args.top)
            return
        cpus = []
        for _ in range(args.runs):
            user, system, wall, opened = asyncio.run(drain_once(worker, args.tasks, None))
            cpus.append(1000 * (user + system) / args.tasks)
            print(
                f"{args.tasks} tasks: {cpus[-1]:.4f} ms CPU per delivered task (user {1000 * user / args.tasks:.4f},"
                f" system {1000 * system / args.tasks:.4f}), {args.tasks / wall:,.0f} tasks/s,"
                f" {opened} connections opened"
            )
        print(f"median {statistics.median(cpus):.4f} ms CPU per delivered task over {args.runs} runs")


if __name__ == "__main__":
    main()
