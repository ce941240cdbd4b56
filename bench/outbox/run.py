"""Benchmark of the transactional outbox, in one run: `.venv/bin/python bench/outbox/run.py`.

1. enqueue cost: a transaction with one business INSERT, the same plus `.delay()` in outbox mode, and the same plus
   one more plain INSERT (the target: `.delay()` costs no more than one INSERT);
2. relay throughput with 1, 2 and 4 relay processes, to a client that costs nothing and to the emulator (beside
   the emulator's own create capacity, measured with the same batch calls made directly);
3. commit-to-created latency, p50 and p99, with LISTEN/NOTIFY and with polling only;
4. relay CPU during a Cloud Tasks outage while the app keeps committing: the `fastapi-gcp-tasks relay` command
   (default settings) sending to an address where nothing listens, its CPU time read from /proc.

Needs PostgreSQL (FASTAPI_GCP_TASKS_BENCH_POSTGRES_URL, default the local server); creates the database
`bench_outbox` and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from google.cloud import tasks_v2
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, event, insert, make_url, text
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fastapi_gcp_tasks import DelayedRouteBuilder  # noqa: E402
from fastapi_gcp_tasks.build._naming import new_task_id, task_name  # noqa: E402
from fastapi_gcp_tasks.dispatch._sink import PreparedTask  # noqa: E402
from fastapi_gcp_tasks.outbox import (  # noqa: E402
    CloudTasksRelayClient,
    NullRelayClient,
    Relay,
    RelaySettings,
    migrate,
    outbox_sink,
    use_outbox,
)
from fastapi_gcp_tasks.outbox._sql import insert_statement  # noqa: E402

QUEUE = "projects/bench/locations/here/queues/outbox"
BASE = os.environ.get("FASTAPI_GCP_TASKS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DB_NAME = "bench_outbox"

business = MetaData()
orders = Table("bench_orders", business, Column("id", Integer, primary_key=True), Column("sku", String(40)))
audit = Table("bench_audit", business, Column("id", Integer, primary_key=True), Column("sku", String(40)))


def _url() -> str:
    return make_url(BASE).set(database=DB_NAME).render_as_string(hide_password=False)


def _create_database() -> None:
    admin = create_engine(BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    admin.dispose()
    migrate(_url())
    engine = create_engine(_url())
    business.create_all(engine)
    engine.dispose()


def _drop_database() -> None:
    admin = create_engine(BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
    admin.dispose()


def _hello_route() -> Any:
    router = APIRouter(
        route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://127.0.0.1:9", sink=outbox_sink())
    )

    @router.post("/hello")
    def hello(name: str, quantity: int = 1) -> None: ...

    return hello


# 1. enqueue cost -----------------------------------------------------------------------------------------------


def bench_enqueue(rounds: int) -> list[tuple[str, float, float]]:
    engine = create_engine(_url())
    statements = [0]

    @event.listens_for(engine, "before_cursor_execute")
    def count(*_: Any) -> None:
        statements[0] += 1

    hello = _hello_route()

    def plain(session: Session, i: int) -> None:
        session.execute(insert(orders).values(sku=f"sku-{i}"))

    def with_delay(session: Session, i: int) -> None:
        session.execute(insert(orders).values(sku=f"sku-{i}"))
        with use_outbox(session):
            hello.delay(name=f"sku-{i}", quantity=2)

    def with_insert(session: Session, i: int) -> None:
        session.execute(insert(orders).values(sku=f"sku-{i}"))
        session.execute(insert(audit).values(sku=f"sku-{i}"))

    variants: dict[str, Callable[[Session, int], None]] = {
        "transaction with 1 INSERT": plain,
        "  + .delay() into the outbox": with_delay,
        "  + 1 more plain INSERT": with_insert,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    counts: dict[str, float] = {}
    with Session(engine) as session:
        for _ in range(3):  # interleaved blocks, best of three
            for name, body in variants.items():
                statements[0] = 0
                started = time.perf_counter()
                for i in range(rounds):
                    with session.begin():
                        body(session, i)
                times[name].append((time.perf_counter() - started) / rounds)
                counts[name] = statements[0] / rounds
    engine.dispose()
    return [(name, min(times[name]) * 1e6, counts[name]) for name in variants]


# 2. relay throughput -------------------------------------------------------------------------------------------


def _template_request() -> tasks_v2.CreateTaskRequest:
    captured: list[PreparedTask] = []

    class Capture:
        def submit(self, task: PreparedTask) -> tasks_v2.Task:
            captured.append(task)
            return task.placeholder()

        async def submit_async(self, task: PreparedTask) -> tasks_v2.Task:
            return self.submit(task)

    hello = _hello_route()
    hello.options(sink=Capture()).delay(name="bench", quantity=3)
    return captured[0].request


def fill(count: int) -> None:
    template = tasks_v2.CreateTaskRequest.serialize(_template_request())
    engine = create_engine(_url())
    rows = []
    for _ in range(count):
        request = tasks_v2.CreateTaskRequest.deserialize(template)
        request.task.name = task_name(QUEUE, new_task_id())
        rows.append(
            {
                "queue_path": QUEUE,
                "task_name": request.task.name,
                "request": tasks_v2.CreateTaskRequest.serialize(request),
            }
        )
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE fastapi_gcp_tasks_outbox"))
        for start in range(0, count, 5000):
            conn.execute(insert_statement(), rows[start : start + 5000])
    with engine.begin() as conn:
        conn.execute(text("ANALYZE fastapi_gcp_tasks_outbox"))
    engine.dispose()


def _relay_process(url: str, target: str, ready: Any, go: Any, results: Any) -> None:
    client: Any = NullRelayClient() if target == "null" else CloudTasksRelayClient.for_emulator(target, mode="batch")
    settings = RelaySettings(batch_size=100, concurrency=4, listen=False, poll_interval=0.05, stats_interval=3600)
    relay = Relay(url, client, settings)
    statements = [0]

    @event.listens_for(relay.engine, "before_cursor_execute")
    def count(*_: Any) -> None:
        statements[0] += 1

    with relay.engine.connect():
        pass  # connect before the clock starts
    ready.put(os.getpid())
    go.wait()

    async def main() -> None:
        await relay.run(until_idle=True)
        if isinstance(client, CloudTasksRelayClient):
            await client.close()

    asyncio.run(main())
    results.put((time.time(), relay.stats.delivered, statements[0], getattr(client, "calls", 0)))
    relay.engine.dispose()


def bench_relays(count: int, relays: int, target: str) -> tuple[float, float, float]:
    fill(count)
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    ready = ctx.Queue()
    results = ctx.Queue()
    processes = [ctx.Process(target=_relay_process, args=(_url(), target, ready, go, results)) for _ in range(relays)]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)  # every relay has imported and connected
    time.sleep(0.5)
    started = time.time()
    go.set()
    finished = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    elapsed = max(f[0] for f in finished) - started
    delivered = sum(f[1] for f in finished)
    assert delivered == count, (delivered, count)
    return count / elapsed, sum(f[2] for f in finished) / count, elapsed


def emulator_capacity(address: str, count: int, mode: Any) -> float:
    """Tasks/s the emulator creates when called directly, from memory, with the relay's client (4 batches in flight)."""
    template = tasks_v2.CreateTaskRequest.serialize(_template_request())

    async def main() -> float:
        client = CloudTasksRelayClient.for_emulator(address, mode=mode)
        batches = []
        for start in range(0, count, 100):
            batch = []
            for _ in range(min(100, count - start)):
                request = tasks_v2.CreateTaskRequest.deserialize(template)
                request.task.name = task_name(QUEUE, new_task_id())
                batch.append(request)
            batches.append(batch)
        semaphore = asyncio.Semaphore(4)

        async def one(batch: Sequence[tasks_v2.CreateTaskRequest]) -> None:
            async with semaphore:
                results = await client.send_batch_async(batch, timeout=30)
                assert all(isinstance(r, tasks_v2.Task) for r in results)

        started = time.perf_counter()
        await asyncio.gather(*(one(b) for b in batches))
        elapsed = time.perf_counter() - started
        await client.close()
        return count / elapsed

    return asyncio.run(main())


# 3. latency ----------------------------------------------------------------------------------------------------


class _Stopwatch(NullRelayClient):
    def __init__(self, expected: int) -> None:
        super().__init__()
        self.created_at: dict[str, float] = {}
        self.expected = expected
        self.done = asyncio.Event()

    async def send_batch_async(self, requests: Sequence[tasks_v2.CreateTaskRequest], *, timeout: float) -> Any:
        now = time.perf_counter()
        for request in requests:
            self.created_at[request.task.name] = now
        if len(self.created_at) >= self.expected:
            self.done.set()
        return await super().send_batch_async(requests, timeout=timeout)


def bench_latency(samples: int, *, listen: bool, poll_interval: float) -> tuple[float, float]:
    hello = _hello_route()
    client = _Stopwatch(samples)
    relay = Relay(_url(), client, RelaySettings(listen=listen, poll_interval=poll_interval, stats_interval=3600))
    committed: dict[str, float] = {}
    writer_engine = create_engine(_url())

    def writer() -> None:
        with Session(writer_engine) as session:
            for i in range(samples):
                with session.begin(), use_outbox(session):
                    name = hello.delay(name=f"n{i}").name
                committed[name] = time.perf_counter()
                time.sleep(0.02)

    async def main() -> None:
        async with relay.running():
            await asyncio.sleep(0.5)
            await asyncio.to_thread(writer)
            await asyncio.wait_for(client.done.wait(), poll_interval + 5)

    asyncio.run(main())
    relay.engine.dispose()
    writer_engine.dispose()
    latencies = sorted((client.created_at[n] - t) * 1000 for n, t in committed.items())
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


def _cpu_seconds(pid: int) -> float:
    # utime + stime (fields 14 and 15 of /proc/PID/stat), every thread of the process
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_outage(seconds: float, *, listen: bool, commits_per_second: float = 50.0) -> tuple[float, int, int]:
    """Relay CPU share of one core, send attempts and rows committed during `seconds` of an outage."""
    template = tasks_v2.CreateTaskRequest.serialize(_template_request())
    engine = create_engine(_url())
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE fastapi_gcp_tasks_outbox"))

    def attempts() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(text("SELECT coalesce(sum(attempts), 0) FROM fastapi_gcp_tasks_outbox")).scalar_one()
            )

    def rows() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM fastapi_gcp_tasks_outbox")).scalar_one())

    committing = threading.Event()
    committing.set()

    def app() -> None:
        while committing.is_set():
            request = tasks_v2.CreateTaskRequest.deserialize(template)
            request.task.name = task_name(QUEUE, new_task_id())
            row = {
                "queue_path": QUEUE,
                "task_name": request.task.name,
                "request": tasks_v2.CreateTaskRequest.serialize(request),
            }
            with engine.begin() as conn:
                conn.execute(insert_statement(), row)
            time.sleep(1 / commits_per_second)

    nowhere = f"127.0.0.1:{_free_port()}"  # nothing listens there: every send fails with UNAVAILABLE
    command = [sys.executable, "-m", "fastapi_gcp_tasks", "relay", "--database-url", _url(), "--emulator-host", nowhere,
               "--log-level", "ERROR", *([] if listen else ["--no-listen"])]  # fmt: skip
    relay = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    writer = threading.Thread(target=app, daemon=True)
    writer.start()
    try:
        deadline = time.monotonic() + 60
        while attempts() == 0:  # the relay runs and has failed at least once
            if time.monotonic() > deadline or relay.poll() is not None:
                raise RuntimeError("the relay made no attempt within 60 s")
            time.sleep(0.1)
        cpu, start, tried, committed = _cpu_seconds(relay.pid), time.monotonic(), attempts(), rows()
        time.sleep(seconds)
        cpu = _cpu_seconds(relay.pid) - cpu
        elapsed = time.monotonic() - start
        tried, committed = attempts() - tried, rows() - committed
    finally:
        committing.clear()
        writer.join(10)
        relay.terminate()
        relay.wait(30)
        engine.dispose()
    return cpu / elapsed, tried, committed


# main ----------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="rows per throughput run")
    parser.add_argument("--rounds", type=int, default=1_000, help="transactions per enqueue variant")
    parser.add_argument("--samples", type=int, default=200, help="latency samples per mode")
    parser.add_argument("--outage-seconds", type=float, default=30.0, help="length of each outage window")
    args = parser.parse_args()

    _create_database()
    port = _free_port()
    emulator = subprocess.Popen(
        [sys.executable, "-m", "fastapi_gcp_tasks", "emulator", "--port", str(port), "--queue", QUEUE,
         "--log-level", "WARNING"],
        cwd=ROOT,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        _wait_for_port(port)
        from fastapi_gcp_tasks.utils import emulator_client

        emulator_client(host=address).pause_queue(name=QUEUE)  # store the tasks, deliver none

        print(f"\n1. enqueue cost ({args.rounds} transactions each, PostgreSQL, best of 3)")
        print(f"{'variant':<34}{'µs / transaction':>18}{'statements':>12}")
        for name, micros, statements in bench_enqueue(args.rounds):
            print(f"{name:<34}{micros:>18.0f}{statements:>12.1f}")

        print(f"\n2. relay throughput ({args.tasks} rows, batch 100, 4 batches in flight per relay)")
        print(f"{'target':<34}{'relays':>7}{'tasks/s':>10}{'SQL / task':>12}")
        for relays in (1, 2, 4):
            rate, sql, _ = bench_relays(args.tasks, relays, "null")
            print(f"{'null client (costs nothing)':<34}{relays:>7}{rate:>10.0f}{sql:>12.3f}")
        for mode in ("concurrent", "batch"):
            capacity = emulator_capacity(address, args.tasks, mode)
            print(f"{'emulator direct, ' + mode:<34}{'-':>7}{capacity:>10.0f}{'-':>12}")
        for relays in (1, 2, 4):
            rate, sql, _ = bench_relays(args.tasks, relays, address)
            print(f"{'emulator via the relay':<34}{relays:>7}{rate:>10.0f}{sql:>12.3f}")

        print(f"\n3. commit-to-created latency ({args.samples} single-task transactions, null client)")
        print(f"{'mode':<34}{'p50 ms':>10}{'p99 ms':>10}")
        for label, listen, poll in (
            ("LISTEN/NOTIFY (poll every 1 s)", True, 1.0),
            ("polling only, every 0.1 s", False, 0.1),
            ("polling only, every 1 s", False, 1.0),
        ):
            p50, p99 = bench_latency(args.samples, listen=listen, poll_interval=poll)
            print(f"{label:<34}{p50:>10.1f}{p99:>10.1f}")

        print(f"\n4. relay CPU during a Cloud Tasks outage ({args.outage_seconds:g} s, the app committing 50 tasks/s)")
        print(f"{'mode':<34}{'CPU % of a core':>16}{'attempts':>10}{'committed':>11}")
        for label, listen in (("LISTEN/NOTIFY (default)", True), ("polling only (--no-listen)", False)):
            share, tried, committed = bench_outage(args.outage_seconds, listen=listen)
            print(f"{label:<34}{share * 100:>16.2f}{tried:>10}{committed:>11}")
        print("\nfor scale: faststream-outbox reports 410-470 messages/s for one relay worker")
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
        _drop_database()
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
