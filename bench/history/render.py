"""Server-side render time of every console page: `.venv/bin/python bench/history/render.py`.

The console of a production app (`AppBackend`: task history on PostgreSQL, the emulator as Cloud Tasks) over
100,000 tasks in history (with their attempts over the last day, and 1,000 dead letters) and 10,000 tasks
pending on the emulator's queue (also in history, as pending). Each page is requested in-process through the
ASGI app (no socket), after a warm-up, with the backend's caches cleared before every request so that each
render pays for every query and RPC it makes (the worst case; a busy console hits its 1-10 s caches). The
overview's chart keeps the throughput buckets that are over: "overview, first render" reads the whole day
again each time (the first render of a process), "overview" only the buckets that may still change. Prints
p50 / p95 / max per page against the 200 ms target.

Needs PostgreSQL (FASTAPI_GCP_TASKS_BENCH_POSTGRES_URL, default the local server); creates the database
`bench_console` and drops it at the end. Seeding uses COPY. `--tasks`, `--pending`, `--runs` scale it down or up.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
from google.cloud import tasks_v2
from google.protobuf import timestamp_pb2
from sqlalchemy import create_engine, make_url, text

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fastapi_gcp_tasks.console._app import console_app  # noqa: E402
from fastapi_gcp_tasks.console._app_backend import AppBackend, _Chart  # noqa: E402
from fastapi_gcp_tasks.emulator import Emulator  # noqa: E402
from fastapi_gcp_tasks.history import TaskHistory, migrate  # noqa: E402

BASE = os.environ.get("FASTAPI_GCP_TASKS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DB_NAME = "bench_console"
QUEUE = "projects/bench/locations/here/queues/console"
ENDPOINTS = ["/orders/{shop}", "/emails/{user_id}", "/invoices/run", "/reports/{kind}", "/sync/{account}"]
TARGET_MS = 200.0


def _url() -> str:
    return make_url(BASE).set(database=DB_NAME).render_as_string(hide_password=False)


def _admin(sql: str) -> None:
    admin = create_engine(BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(sql))
    admin.dispose()


def _create_pending(emu: Emulator, count: int) -> list[str]:
    """`count` tasks an hour ahead on the emulator's queue (8 threads of create_task); their names."""
    client = emu.tasks_client()
    eta = timestamp_pb2.Timestamp()
    eta.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))

    def create(index: int) -> str:
        task = tasks_v2.Task(
            name=f"{QUEUE}/tasks/pending-{index:06d}",
            schedule_time=eta,
            http_request=tasks_v2.HttpRequest(
                url=f"http://127.0.0.1:9/orders/shop{index % 50}",
                http_method=tasks_v2.HttpMethod.POST,
                headers={"content-type": "application/json"},
                body=json.dumps({"item": f"sku-{index}"}).encode(),
            ),
        )
        return str(client.create_task(parent=QUEUE, task=task).name)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(create, range(count)))


TASK_COLUMNS = [
    "task_name",
    "task_id",
    "queue_name",
    "endpoint",
    "method",
    "status",
    "arguments",
    "attempts",
    "last_status_code",
    "last_attempt_at",
    "created_at",
    "eta",
    "dispatch_mode",
    "seen_at",
    "updated_at",
]
ATTEMPT_COLUMNS = [
    "task_name",
    "endpoint",
    "status",
    "retry_count",
    "execution_count",
    "started_at",
    "duration",
    "status_code",
    "outcome",
    "error_type",
    "error_message",
    "trace_id",
]


def _row(columns: list[str], **values: Any) -> tuple[Any, ...]:
    return tuple(values.get(column) for column in columns)


def _seed(tasks: int, pending_names: list[str]) -> dict[str, str]:
    """COPY `tasks` history rows (the last ones named after the emulator's pending tasks), attempts, letters.

    Tasks are spread over the last day; one in ten failed once before succeeding, one in 97 gave up after three
    attempts. Returns a finished task with two attempts and a pending one, for the task page.
    """
    now = dt.datetime.now(dt.UTC)
    url = make_url(_url())
    conninfo = f"host={url.host} port={url.port or 5432} user={url.username} dbname={url.database}"
    samples: dict[str, str] = {}
    first_pending = tasks - len(pending_names)
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        attempts: list[tuple[Any, ...]] = []
        with cur.copy(f"COPY fastapi_gcp_tasks_history_tasks ({', '.join(TASK_COLUMNS)}) FROM STDIN") as copy:
            for index in range(tasks):
                seen = now - dt.timedelta(seconds=86_000 * (tasks - index) / tasks)
                name = pending_names[index - first_pending] if index >= first_pending else f"{QUEUE}/tasks/d{index:07d}"
                endpoint = ENDPOINTS[index % len(ENDPOINTS)]
                common = {
                    "task_name": name,
                    "task_id": name.rsplit("/", 1)[-1],
                    "queue_name": "console",
                    "endpoint": endpoint,
                    "method": "POST",
                    "arguments": json.dumps({"shop": f"shop{index % 50}", "order": {"item": f"sku-{index}"}}),
                    "created_at": seen,
                    "seen_at": seen,
                    "dispatch_mode": "immediate",
                }
                if index >= first_pending:
                    samples.setdefault("pending", name)
                    eta = seen + dt.timedelta(hours=1)
                    copy.write_row(_row(TASK_COLUMNS, **common, status="pending", attempts=0, eta=eta, updated_at=seen))
                    continue
                gave_up = index % 97 == 0
                tries = 3 if gave_up else (2 if index % 10 == 0 else 1)
                if tries == 2:
                    samples.setdefault("retried", name)
                last = seen + dt.timedelta(seconds=tries)
                copy.write_row(
                    _row(
                        TASK_COLUMNS,
                        **common,
                        status="failed" if gave_up else "succeeded",
                        attempts=tries,
                        last_status_code=500 if gave_up else 200,
                        last_attempt_at=last,
                        updated_at=last,
                    )
                )
                for attempt in range(tries):
                    final = attempt == tries - 1
                    ok = final and not gave_up
                    attempts.append(
                        _row(
                            ATTEMPT_COLUMNS,
                            task_name=name,
                            endpoint=endpoint,
                            status="succeeded" if ok else ("failed" if final else "retrying"),
                            retry_count=attempt,
                            execution_count=attempt,
                            started_at=seen + dt.timedelta(seconds=attempt),
                            duration=0.012 + attempt * 0.01,
                            status_code=200 if ok else 500,
                            outcome="succeeded" if ok else ("gave_up" if final else "failed"),
                            error_type=None if ok else "ValueError",
                            error_message=None if ok else f"shop{index % 50} is closed",
                            trace_id=f"{index:032x}",
                        )
                    )
        with cur.copy(f"COPY fastapi_gcp_tasks_history_attempts ({', '.join(ATTEMPT_COLUMNS)}) FROM STDIN") as copy:
            for attempt_row in attempts:
                copy.write_row(attempt_row)
        letter_columns = (
            "letter_key, reason, task_name, queue_name, endpoint, method, body, headers, errors, received_at, "
            "deliveries, status, updated_at"
        )
        with cur.copy(f"COPY fastapi_gcp_tasks_dead_letters ({letter_columns}) FROM STDIN") as copy:
            for index in range(1000):
                at = now - dt.timedelta(seconds=80 * index)
                copy.write_row(
                    (
                        f"letter-{index}",
                        "invalid_request",
                        f"dead-{index}",
                        "console",
                        f"/orders/shop{index % 50}",
                        "POST",
                        b'{"item": 1}',
                        "{}",
                        json.dumps([{"loc": ["body", "item"], "msg": "not a string"}]),
                        at,
                        1,
                        "open" if index % 3 else "discarded",
                        at,
                    )
                )
        conn.commit()
        cur.execute("ANALYZE")
    return samples


async def _measure(app: Any, backend: AppBackend, path: str, runs: int, *, cold_chart: bool = False) -> list[float]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        times: list[float] = []
        for run in range(runs + 2):
            for cache in (backend._queues_cache, backend._plan_cache, backend._token_cache):
                cache.clear()
            if cold_chart:  # as on the first render of a process: every bucket of the window read again
                backend._chart = _Chart(backend._chart.window, backend._chart.bucket)
            start = time.perf_counter()
            response = await client.get(path)
            elapsed = (time.perf_counter() - start) * 1000
            if response.status_code != 200:
                raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")
            if run >= 2:
                times.append(elapsed)
        return times


async def _pages(
    app: Any, backend: AppBackend, samples: dict[str, str], runs: int, depth: int
) -> list[tuple[str, list[float]]]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        # a cursor `depth` pages deep, followed as a user would
        path = "/tasks"
        for _ in range(depth):
            html = (await client.get(path)).text
            marker = 'rel="next" href="/tasks'
            path = "/tasks" + html[html.index(marker) + len(marker) :].split('"', 1)[0].replace("&amp;", "&")
    pages = [
        ("overview", "/"),
        ("tasks, first page", "/tasks"),
        (f"tasks, page {depth + 1} (keyset)", path),
        ("tasks, status=failed", "/tasks?status=failed"),
        ("tasks, status=pending", "/tasks?status=pending"),
        ("tasks, endpoint", "/tasks?endpoint=/emails/{user_id}"),
        ("tasks, search by id", "/tasks?search=d0000500"),
        ("task, 2 attempts", f"/tasks/{samples['retried']}"),
        ("task, pending (+ get_task)", f"/tasks/{samples['pending']}"),
        ("queues", "/queues"),
        ("dead letters", "/dead-letters"),
        ("live token", "/_live?token=x"),
    ]
    results = [("overview, first render", await _measure(app, backend, "/", runs, cold_chart=True))]
    return results + [(name, await _measure(app, backend, page, runs)) for name, page in pages]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks in history (default 100000)")
    parser.add_argument("--pending", type=int, default=10_000, help="of which pending on the emulator (10000)")
    parser.add_argument("--runs", type=int, default=15, help="measured requests per page (15)")
    args = parser.parse_args()
    started = time.perf_counter()
    _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{DB_NAME}"')
    try:
        migrate(_url())
        with Emulator(queues=[QUEUE]) as emu:
            seed_start = time.perf_counter()
            pending = _create_pending(emu, args.pending)
            samples = _seed(args.tasks, pending)
            seeded = time.perf_counter() - seed_start
            with TaskHistory(_url()) as history:
                backend = AppBackend(history=history, queues=[QUEUE], tasks_client=emu.tasks_client())
                app = console_app(backend, local_only=True)
                depth = max(1, min(100, args.tasks // 50 - 2))
                results = asyncio.run(_pages(app, backend, samples, args.runs, depth))
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    print(
        f"console render time: {args.tasks:,} tasks in history, {args.pending:,} pending on the emulator, "
        f"PostgreSQL; {args.runs} requests per page, caches cleared (seeded in {seeded:.1f} s)"
    )
    print(f"{'page':<30} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  target < {TARGET_MS:.0f} ms")
    worst = 0.0
    for name, times in results:
        ordered = sorted(times)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        worst = max(worst, statistics.median(ordered))
        flag = "ok" if statistics.median(ordered) < TARGET_MS else "SLOW"
        print(f"{name:<30} {statistics.median(ordered):8.1f} {p95:8.1f} {max(ordered):8.1f}  {flag}")
    print(f"worst p50 {worst:.1f} ms; total run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
