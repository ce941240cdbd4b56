"""Delivery clients side by side: CPU per request and rate against the benchmark's worker, in one run.

Compares the emulator's `HttpDeliverer` (h11 with its own pool), aiohttp (when importable: it is not a
project dependency, run this with a Python that has it and the project on PYTHONPATH), httpx, and the
benchmark's minimal load generator as the floor. Each client sends the same task-like POST, 48 in flight,
and its process CPU time (user + system) is divided by the requests sent.

    .venv/bin/python bench/emulator/clients.py [--count 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from fastapi_gcp_tasks.emulator import HttpDeliverer
from fastapi_gcp_tasks.emulator._types import DeliveryRequest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from loadgen import post_many  # noqa: E402

from bench import CONCURRENCY, free_port, running  # noqa: E402 - the benchmark's own helpers, next to this file

BODY = b'{"t": 0}'
HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": "Google-Cloud-Tasks",
    "X-CloudTasks-QueueName": "q0",
    "X-CloudTasks-TaskName": "0123456789",
    "X-CloudTasks-TaskRetryCount": "0",
    "X-CloudTasks-TaskExecutionCount": "0",
    "X-CloudTasks-TaskETA": "1700000000.000000",
}

Send = Callable[[], Awaitable[None]]


async def _run(send: Send, count: int) -> None:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with semaphore:
            await send()

    await asyncio.gather(*(one() for _ in range(count)))


async def measure(name: str, make: Callable[[str], Awaitable[tuple[Send, Callable[[], Awaitable[None]]]]], url: str,
                  count: int) -> tuple[str, float, float]:  # fmt: skip
    """(name, requests per second, client CPU ms per request)."""
    send, close = await make(url)
    await _run(send, 300)
    cpu, started = time.process_time(), time.perf_counter()
    await _run(send, count)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await close()
    return name, count / elapsed, 1000 * cpu / count


async def ours(url: str) -> tuple[Send, Callable[[], Awaitable[None]]]:
    deliverer = HttpDeliverer()
    request = DeliveryRequest(method="POST", url=url, headers=HEADERS, body=BODY, deadline=30)

    async def send() -> None:
        result = await deliverer.deliver(request)
        assert result.status == 200, result

    return send, deliverer.aclose


async def with_httpx(url: str) -> tuple[Send, Callable[[], Awaitable[None]]]:
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=CONCURRENCY), timeout=30)

    async def send() -> None:
        response = await client.post(url, headers=HEADERS, content=BODY)
        assert response.status_code == 200

    return send, client.aclose


async def with_aiohttp(url: str) -> tuple[Send, Callable[[], Awaitable[None]]]:
    import aiohttp  # type: ignore[import-not-found, unused-ignore]

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def send() -> None:
        async with session.post(url, headers=HEADERS, data=BODY, allow_redirects=True, max_redirects=10) as response:
            await response.read()
            assert response.status == 200

    return send, session.close


async def main_async(url: str, count: int) -> list[tuple[str, float, float]]:
    rows = []
    candidates: list[tuple[str, Any]] = [("HttpDeliverer (h11 + own pool)", ours), ("httpx.AsyncClient", with_httpx)]
    try:
        import aiohttp  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        print("aiohttp is not importable here: its row is left out", file=sys.stderr)
    else:
        candidates.insert(1, (f"aiohttp {aiohttp.__version__}", with_aiohttp))
    for name, make in candidates:
        rows.append(await measure(name, make, url, count))
    await post_many(url, BODY, 300, CONCURRENCY)
    cpu, started = time.process_time(), time.perf_counter()
    await post_many(url, BODY, count, CONCURRENCY)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    rows.append(("loadgen.py (floor: parses only this worker's answers)", count / elapsed, 1000 * cpu / count))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    port = free_port()
    worker = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "worker:app",
        "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    load = os.getloadavg()[0]
    with running(worker, port):
        rows = asyncio.run(main_async(f"http://127.0.0.1:{port}/task", args.count))
    print(f"\n{os.cpu_count()} CPUs, load average {load:.1f} before, {os.getloadavg()[0]:.1f} after;"
          f" {args.count} POSTs, {CONCURRENCY} in flight\n")  # fmt: skip
    print("| client | requests/s | client CPU per request (ms) |")
    print("| --- | ---: | ---: |")
    for name, rate, cpu in rows:
        print(f"| {name} | {rate:,.0f} | {cpu:.3f} |")


if __name__ == "__main__":
    main()
