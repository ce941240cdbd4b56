"""Our emulator against gcloud-tasks-emulator 0.6.2, side by side in one run; prints a Markdown table.

Run from the repository root with the project venv: `.venv/bin/python bench/emulator/bench.py`
(`--quick` for smaller counts). The peer runs in its own venv, created by `bench/emulator/peer.sh`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from fastapi import APIRouter, FastAPI
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.protobuf import empty_pb2, field_mask_pb2
from pydantic import BaseModel

from fastapi_gcp_tasks import DelayedRouteBuilder
from fastapi_gcp_tasks.utils import async_emulator_client, emulator_client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import post_many

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LOCATION = "projects/bench/locations/here"
QUEUES = [f"{LOCATION}/queues/q{index}" for index in range(16)]
"""Sixteen queues, because one queue may dispatch at most 500 tasks a second (as on Cloud Tasks)."""
CONCURRENCY = 48
"""Requests in flight to the worker: for its capacity, and in total over the queues while draining."""
DELIVERY_HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": "Google-Cloud-Tasks",
    "X-CloudTasks-QueueName": "q0",
    "X-CloudTasks-TaskName": "1234567890123456789",
    "X-CloudTasks-TaskRetryCount": "0",
    "X-CloudTasks-TaskExecutionCount": "0",
    "X-CloudTasks-TaskETA": "1764320000.123456",
}
"""The headers of a first delivery from a queue: the load generator sends them too, so that the worker's
own rate is measured on the requests it gets while draining (it parses 6 more headers than a bare POST)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"process {process.args} did not listen on {port}") from None
            time.sleep(0.05)


@contextmanager
def running(args: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_for_port(port, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ours_command(port: int) -> list[str]:
    args = [sys.executable, "-m", "fastapi_gcp_tasks.emulator", "--port", str(port), "--http-port", "0"]
    args += ["--log-level", "ERROR"]
    for queue in QUEUES:
        args += ["--queue", queue]
    return args


def peer_command(port: int) -> list[str]:
    python = subprocess.run([str(HERE / "peer.sh")], capture_output=True, text=True, check=True).stdout.split()[-1]
    args = [python, "-m", "gcloud_tasks_emulator", "start", "-p", str(port), "-q"]
    for queue in QUEUES:
        args += ["-d", queue]
    return args


@dataclass
class Result:
    name: str
    rows: dict[str, str] = field(default_factory=dict)


def task(url: str, stamp: bool = False) -> tasks_v2.Task:
    body = json.dumps({"t": time.time() if stamp else 0}).encode()
    return tasks_v2.Task(
        http_request=tasks_v2.HttpRequest(url=url, body=body, headers={"Content-Type": "application/json"})
    )


def measure_cpu(pid: int, count: int, run: Callable[[], None]) -> tuple[float, float]:
    """(tasks per second, emulator CPU ms per task) of `run`, which creates `count` tasks."""
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    return count / elapsed, 1000 * (cpu_seconds(pid) - cpu_before) / count


async def create_concurrently(address: str, url: str, count: int, concurrency: int, queues: list[str]) -> None:
    client = async_emulator_client(host=address)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with semaphore:
            await client.create_task(parent=queues[index % len(queues)], task=task(url))

    await asyncio.gather(*(one(index) for index in range(count)))
    await client.transport.close()


class Worker:
    """The benchmark's worker, polled over one kept-alive connection (polling costs the shared CPUs little)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=10)

    def stats(self) -> dict[str, Any]:
        return dict(self.client.get("/stats").json())

    def reset(self) -> None:
        self.client.post("/reset")

    def wait_count(self, count: int, timeout: float) -> dict[str, Any] | None:
        """The worker's stats once it has seen `count` tasks (None on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.stats()
            if int(stats["count"]) >= count:
                return stats
            time.sleep(0.05)
        return None


async def worker_capacity(worker: str, count: int, concurrency: int = CONCURRENCY) -> float:
    """The worker's own max request rate: `count` POSTs, `concurrency` at a time over kept-alive connections.

    Driven by `loadgen.py`, which parses only this worker's answers and costs less CPU than any real client
    (what the worker itself can take), with the headers of a delivery (`DELIVERY_HEADERS`).
    """
    await post_many(f"{worker}/task", b'{"t": 0}', 200, concurrency, DELIVERY_HEADERS)
    started = time.perf_counter()
    await post_many(f"{worker}/task", b'{"t": 0}', count, concurrency, DELIVERY_HEADERS)
    return count / (time.perf_counter() - started)


class _Stamp(BaseModel):
    t: float = 0.0


class _CountingInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts the unary calls a client makes, by method name."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        self.calls[client_call_details.method.rsplit("/", 1)[-1]] += 1
        return continuation(client_call_details, request)


def rpcs_per_delay(address: str, worker: str, queue: str, count: int) -> str:
    """The RPCs `count` calls of `.delay()` make (a deterministic count), by method: "total (method n, ...)"."""
    counter = _CountingInterceptor()
    channel = grpc.intercept_channel(grpc.insecure_channel(address), counter)
    client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    router = APIRouter(route_class=DelayedRouteBuilder(queue_path=queue, base_url=worker, client=client))

    @router.post("/task")
    def stamped(stamp: _Stamp) -> None: ...

    FastAPI().include_router(router)
    for _ in range(count):
        stamped.delay(stamp=_Stamp())  # type: ignore[attr-defined]
    channel.close()
    methods = ", ".join(f"{name} {number}" for name, number in sorted(counter.calls.items()))
    return f"{sum(counter.calls.values()) / count:.2f} ({methods} for {count})"


def bench_emulator(name: str, command: list[str], port: int, worker: str, sizes: dict[str, int]) -> Result:
    result = Result(name)
    url = f"{worker}/task"
    address = f"127.0.0.1:{port}"
    with running(command, port) as process:
        client = emulator_client(host=address)
        q0 = QUEUES[0]
        client.pause_queue(name=q0)
        for _ in range(100):
            client.create_task(parent=q0, task=task(url))

        def sync_creates() -> None:
            for _ in range(sizes["sync"]):
                client.create_task(parent=q0, task=task(url))

        rate, cpu = measure_cpu(process.pid, sizes["sync"], sync_creates)
        result.rows["create rate, sync, 1 at a time (tasks/s)"] = f"{rate:,.0f}"
        result.rows["emulator CPU per created task, sync (ms)"] = f"{cpu:.3f}"
        client.purge_queue(name=q0)

        def async_creates() -> None:
            asyncio.run(create_concurrently(address, url, sizes["async"], 50, [q0]))

        rate, cpu = measure_cpu(process.pid, sizes["async"], async_creates)
        result.rows["create rate, async, 50 concurrent (tasks/s)"] = f"{rate:,.0f}"
        result.rows["emulator CPU per created task, async 50 (ms)"] = f"{cpu:.3f}"
        client.purge_queue(name=q0)

        if name == "fastapi-gcp-tasks":
            batches = sizes["async"] // 100

            def batch_creates() -> None:
                for _ in range(batches):
                    requests = [tasks_v2.CreateTaskRequest(parent=q0, task=task(url)) for _ in range(100)]
                    client.batch_create_tasks(
                        request=tasks_v2.BatchCreateTasksRequest(parent=q0, requests=requests)
                    ).result()

            rate, cpu = measure_cpu(process.pid, batches * 100, batch_creates)
            result.rows["create rate, batch_create_tasks x100 (tasks/s)"] = f"{rate:,.0f}"
            result.rows["emulator CPU per created task, batch x100 (ms)"] = f"{cpu:.3f}"
            client.purge_queue(name=q0)
        else:
            result.rows["create rate, batch_create_tasks x100 (tasks/s)"] = "n/a"
            result.rows["emulator CPU per created task, batch x100 (ms)"] = "n/a"

        # the RPCs .delay() makes (client side, so the same against any emulator; a paused queue, then purged)
        q2 = QUEUES[2]
        client.pause_queue(name=q2)
        result.rows["RPCs per .delay() (deterministic)"] = rpcs_per_delay(address, worker, q2, sizes["delays"])
        client.purge_queue(name=q2)
        client.resume_queue(name=q2)

        # create-to-delivery latency, one task at a time on a running queue
        q1 = QUEUES[1]
        stats = Worker(worker)
        stats.reset()
        for _ in range(sizes["latency"]):
            client.create_task(parent=q1, task=task(url, stamp=True))
            time.sleep(0.01)
        stats.wait_count(sizes["latency"], 60)
        latencies = sorted(float(x) for x in stats.stats()["latencies"])
        if latencies:
            p50 = statistics.median(latencies)
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            result.rows["create-to-delivery p50 (ms)"] = f"{1000 * p50:.1f}"
            result.rows["create-to-delivery p99 (ms)"] = f"{1000 * p99:.1f}"
        result.rows["latency tasks delivered"] = f"{len(latencies)}/{sizes['latency']}"

        # drain: tasks waiting in paused queues, then every queue resumed at once
        count = sizes["drain"] if name == "fastapi-gcp-tasks" else sizes["peer_drain"]
        for queue in QUEUES:
            client.pause_queue(name=queue)
            limits = tasks_v2.RateLimits(max_concurrent_dispatches=CONCURRENCY // len(QUEUES))
            client.update_queue(
                queue=tasks_v2.Queue(name=queue, rate_limits=limits),
                update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_concurrent_dispatches"]),
            )
        asyncio.run(create_concurrently(address, url, count, 50, QUEUES))
        # the worker's own max rate, measured right before and right after the drain (the machine is shared)
        capacity_before = asyncio.run(worker_capacity(worker, sizes["capacity"]))
        stats.reset()
        cpu_before = cpu_seconds(process.pid)
        started = time.time()
        for queue in QUEUES:
            client.resume_queue(name=queue)
        done = stats.wait_count(count, 120)
        drain_cpu = cpu_seconds(process.pid) - cpu_before
        # the drain ends with the last delivery the worker saw, however late the poll noticed it
        elapsed = float(done["last"]) - started if done is not None else float("inf")
        capacity = (capacity_before + asyncio.run(worker_capacity(worker, sizes["capacity"]))) / 2
        drain = count / elapsed
        result.rows["worker's own max rate, around the drain (requests/s)"] = f"{capacity:,.0f}"
        result.rows["drain rate into the worker (tasks/s)"] = f"{drain:,.0f}"
        result.rows["drain as a share of the worker's own rate"] = f"{100 * drain / capacity:.0f}%"
        result.rows["emulator CPU per delivered task (ms)"] = f"{1000 * drain_cpu / count:.3f}"
        result.rows["drain tasks"] = str(count)
        stats.client.close()
        client.transport.close()
    return result


def grpc_floor(count: int) -> tuple[float, float]:
    """(calls per second, server CPU ms per call) of an empty unary call on a bare sync gRPC server."""
    port = free_port()
    with (
        running([sys.executable, str(HERE / "floor_server.py"), str(port)], port) as process,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        call = channel.unary_unary(
            "/bench.Floor/Call",
            request_serializer=empty_pb2.Empty.SerializeToString,
            response_deserializer=empty_pb2.Empty.FromString,
        )
        for _ in range(200):
            call(empty_pb2.Empty())

        def calls() -> None:
            for _ in range(count):
                call(empty_pb2.Empty())

        return measure_cpu(process.pid, count, calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument("--no-peer", action="store_true", help="measure only this project's emulator")
    args = parser.parse_args()
    sizes = (
        {"sync": 300, "async": 500, "latency": 50, "drain": 600, "peer_drain": 100, "capacity": 600, "delays": 20}
        if args.quick
        else {
            "sync": 2000,
            "async": 3000,
            "latency": 200,
            "drain": 6000,
            "peer_drain": 600,
            "capacity": 4000,
            "delays": 100,
        }
    )
    worker_port = free_port()
    worker = f"http://127.0.0.1:{worker_port}"
    worker_command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "worker:app",
        "--port", str(worker_port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    load_before = os.getloadavg()[0]
    floor_rate, floor_cpu = grpc_floor(sizes["sync"])
    with running(worker_command, worker_port):
        results = [bench_emulator("fastapi-gcp-tasks", ours_command(port := free_port()), port, worker, sizes)]
        if not args.no_peer:
            peer = peer_command(port := free_port())
            results.append(bench_emulator("gcloud-tasks-emulator 0.6.2", peer, port, worker, sizes))
    print(
        f"\n{os.cpu_count()} CPUs, load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after;"
        f" worker: FastAPI on uvicorn, 1 process; {CONCURRENCY} requests in flight when measuring its max rate"
        f" and when draining\n"
    )
    names = [result.name for result in results]
    print(
        f"For scale: an empty unary call on a bare synchronous Python gRPC server costs {floor_cpu:.3f} ms of"
        f" server CPU ({floor_rate:,.0f} calls/s, one at a time).\n"
    )
    print("| measure | " + " | ".join(names) + " |")
    print("| --- | " + " | ".join("---:" for _ in names) + " |")
    for key in results[0].rows:
        print(f"| {key} | " + " | ".join(result.rows.get(key, "") for result in results) + " |")


if __name__ == "__main__":
    main()
