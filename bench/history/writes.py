"""History write throughput from 8 concurrent worker processes into one PostgreSQL: `python bench/history/writes.py`.

Each process is a worker with its own `TaskHistory` (default settings but a queue that holds its whole run, so
nothing is dropped): it records, as fast as it can, tasks of three events each (the sending side's creation, a
failed attempt, the successful retry), timing every `record_*` call, then flushes. Reported per run: events
written per second by all processes together (first event to last flush), and the cost of a `record_*` call on the
request path (p50, p99, max in microseconds), beside the events dropped (expected 0).

Needs PostgreSQL (FASTAPI_GCP_TASKS_BENCH_POSTGRES_URL, default the local server); creates the database
`bench_history` and drops it at the end. `--quick` runs a few seconds; the default run stays under a minute.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url, text

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fastapi_gcp_tasks.history import AttemptEvent, CreatedEvent, TaskHistory, migrate  # noqa: E402

BASE = os.environ.get("FASTAPI_GCP_TASKS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DB_NAME = "bench_history"
QUEUE = "projects/bench/locations/here/queues/history"


def _admin(statement: str) -> None:
    engine = create_engine(make_url(BASE), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def _worker(url: str, worker: int, tasks: int, ready: Any, start: Any, results: Any) -> None:
    history = TaskHistory(url, max_queue=tasks * 3 + 1, retention=None)
    history.engine.connect().close()  # connected before the clock starts
    arguments = history.arguments_for_storage({"user_id": worker, "email": "a@example.com", "token": "s"})
    costs: list[int] = []
    ready.put(worker)
    start.wait()
    began = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    clock = time.perf_counter_ns
    for i in range(tasks):
        name = f"{QUEUE}/tasks/w{worker}-{i}"
        events: list[CreatedEvent | AttemptEvent] = [
            CreatedEvent(name, "history", "/tasks/send/{user_id}", "POST", arguments, None, "immediate", now),
            AttemptEvent(
                name,
                "history",
                "/tasks/send/{user_id}",
                "POST",
                arguments,
                0,
                0,
                now,
                0.004,
                500,
                error_type="TimeoutError",
                error_message="upstream timed out",
                outcome="failed",
            ),
            AttemptEvent(name, "history", "/tasks/send/{user_id}", "POST", arguments, 1, 1, now, 0.003, 200),
        ]
        for event in events:
            before = clock()
            if isinstance(event, CreatedEvent):
                history.record_created(event)
            else:
                history.record_attempt(event)
            costs.append(clock() - before)
    flushed = history.flush(timeout=120)
    ended = time.perf_counter()
    stats = history.stats
    history.close()
    results.put((worker, began, ended, flushed, stats.recorded, stats.dropped, stats.write_errors, costs))


def run(processes: int, tasks: int) -> dict[str, Any]:
    _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{DB_NAME}"')
    url = make_url(BASE).set(database=DB_NAME).render_as_string(hide_password=False)
    try:
        migrate(url)
        context = mp.get_context("fork")  # the parent holds no engine or thread: its imports are reused
        start = context.Event()
        ready = context.Queue()
        results = context.Queue()
        workers = [
            context.Process(target=_worker, args=(url, w, tasks, ready, start, results)) for w in range(processes)
        ]
        for process in workers:
            process.start()
        for _ in workers:
            ready.get(timeout=120)  # every process imported and connected
        start.set()
        rows = [results.get(timeout=300) for _ in workers]
        for process in workers:
            process.join()
        engine = create_engine(url)
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM fastapi_gcp_tasks_history_attempts")).scalar_one()
        engine.dispose()
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    began = min(row[1] for row in rows)
    ended = max(row[2] for row in rows)
    costs = sorted(cost for row in rows for cost in row[7])
    recorded = sum(row[4] for row in rows)
    return {
        "processes": processes,
        "events": processes * tasks * 3,
        "recorded": recorded,
        "dropped": sum(row[5] for row in rows),
        "write_errors": sum(row[6] for row in rows),
        "all_flushed": all(row[3] for row in rows),
        "attempt_rows": stored,
        "seconds": ended - began,
        "events_per_s": recorded / (ended - began),
        "p50_us": statistics.median(costs) / 1000,
        "p99_us": costs[int(len(costs) * 0.99)] / 1000,
        "max_us": costs[-1] / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds: 1,000 tasks per process")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--tasks", type=int, help="tasks per process (3 events each); default 15,000")
    args = parser.parse_args()
    tasks = args.tasks or (1_000 if args.quick else 15_000)
    result = run(args.processes, tasks)
    print(
        "| processes | events | written | dropped | write errors | seconds | events/s | record p50 µs | "
        "record p99 µs | record max µs |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {result['processes']} | {result['events']:,} | {result['recorded']:,} | {result['dropped']:,} | "
        f"{result['write_errors']} | {result['seconds']:.2f} | {result['events_per_s']:,.0f} | "
        f"{result['p50_us']:.2f} | {result['p99_us']:.2f} | {result['max_us']:.0f} |"
    )
    expected = result["processes"] * tasks * 2
    if result["attempt_rows"] != expected or not result["all_flushed"]:
        print(f"WARNING: {result['attempt_rows']} attempt rows stored, {expected} expected", file=sys.stderr)


if __name__ == "__main__":
    main()
