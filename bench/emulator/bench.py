"""Our emulator against gcloud-tasks-emulator 0.6.2, side by side in one run; prints a Markdown table.

Run from the repository root with the project venv: `.venv/bin/python bench/emulator/bench.py`
(`--quick` for smaller counts). The peer runs in its own venv, created by `bench/emulator/peer.sh`.
"""

from __future__ import annotations

import argparse
import asyncio
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

import grpc
import httpx
from google.cloud import tasks_v2
from google.protobuf import empty_pb2, field_mask_pb2

from fastapi_gcp_tasks.emulator import HttpDeliverer
from fastapi_gcp_tasks.emulator._types import DeliveryRequest
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


def worker_stats(worker: str) -> dict[str, object]:
    return dict(httpx.get(f"{worker}/stats", timeout=10).json())


def wait_count(worker: str, count: int, timeout: float) -> float:
    """Seconds until the worker has seen `count` tasks (inf on timeout)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if int(str(worker_stats(worker)["count"])) >= count:
            return time.perf_counter() - started
        time.sleep(0.02)
    return float("inf")


async def worker_capacity(worker: str, count: int, concurrency: int = CONCURRENCY) -> tuple[float, float]:
    """The worker's own max request rate: `count` POSTs, `concurrency` at a time over kept-alive connections.

    Measured twice: driven by `loadgen.py`, which parses only this worker's answers and costs less CPU than
    any real client (the floor: what the worker itself can take), and driven by the emulator's delivery
    client, `HttpDeliverer`, without the emulator around it (what the worker takes from that client).
    """
    await post_many(f"{worker}/task", b'{"t": 0}', 200, concurrency)
    started = time.perf_counter()
    await post_many(f"{worker}/task", b'{"t": 0}', count, concurrency)
    floor = count / (time.perf_counter() - started)
    deliverer = HttpDeliverer()
    request = DeliveryRequest(
        method="POST", url=f"{worker}/task", headers={"Content-Type": "application/json"}, body=b'{"t": 0}', deadline=60
    )
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with semaphore:
            result = await deliverer.deliver(request)
            assert result.status == 200, result

    await asyncio.gather(*(one() for _ in range(200)))
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    client = count / (time.perf_counter() - started)
    await deliverer.aclose()
    return floor, client


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

        # create-to-delivery latency, one task at a time on a running queue
        q1 = QUEUES[1]
        httpx.post(f"{worker}/reset")
        for _ in range(sizes["latency"]):
            client.create_task(parent=q1, task=task(url, stamp=True))
            time.sleep(0.01)
        wait_count(worker, sizes["latency"], 60)
        latencies = sorted(float(x) for x in worker_stats(worker)["latencies"])  # type: ignore[attr-defined]
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
        httpx.post(f"{worker}/reset")
        cpu_before = cpu_seconds(process.pid)
        started = time.perf_counter()
        for queue in QUEUES:
            client.resume_queue(name=queue)
        elapsed = wait_count(worker, count, 300)
        drain_cpu = cpu_seconds(process.pid) - cpu_before
        elapsed = min(elapsed, time.perf_counter() - started)
        floor_after, client_after = asyncio.run(worker_capacity(worker, sizes["capacity"]))
        floor = (capacity_before[0] + floor_after) / 2
        client_rate = (capacity_before[1] + client_after) / 2
        drain = count / elapsed
        result.rows["worker's own max rate, from loadgen.py, around the drain (requests/s)"] = f"{floor:,.0f}"
        result.rows["worker's own max rate, from HttpDeliverer alone, around the drain (requests/s)"] = (
            f"{client_rate:,.0f}"
        )
        result.rows["drain rate into the worker (tasks/s)"] = f"{drain:,.0f}"
        result.rows["emulator CPU per delivered task (ms)"] = f"{1000 * drain_cpu / count:.3f}"
        result.rows["drain tasks"] = str(count)
        result.rows["drain as a share of the worker's rate from loadgen.py"] = f"{100 * drain / floor:.0f}%"
        result.rows["drain as a share of the worker's rate from HttpDeliverer"] = f"{100 * drain / client_rate:.0f}%"
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
        {"sync": 300, "async": 500, "latency": 50, "drain": 600, "peer_drain": 100, "capacity": 600}
        if args.quick
        else {"sync": 3000, "async": 5000, "latency": 500, "drain": 10000, "peer_drain": 1000, "capacity": 10000}
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
