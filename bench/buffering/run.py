"""Latency and throughput of `.delay()` per dispatch mode, against the emulator over real HTTP and gRPC.

One emulator process (its queue paused, so tasks are stored and never delivered) and one uvicorn process
per mode, all started by this script; the client is httpx in this process. Latency requests go round-robin
(in a shuffled order each round) over every (mode, endpoint) pair so that background noise hits
them all alike; throughput is measured one pair at a time. See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PEER_VENV = ROOT / "bench" / ".venv-peer"
PEER_REQUIREMENTS = ["fastapi-gcp-tasks==0.3.4", "uvicorn"]
QUEUE = "projects/bench/locations/here/queues/buffering"
MODES = ["immediate_sync", "immediate_async", "buffered_after", "buffered_before", "peer_0.3.4"]
DELAYS = [0, 1, 10]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_peer_venv() -> Path:
    """The peer's own venv (same import name as ours), created on first run."""
    python = PEER_VENV / "bin" / "python"
    if python.exists():
        return python
    uv = shutil.which("uv") or str(ROOT / ".venv" / "bin" / "uv")
    print(f"creating {PEER_VENV} with {' '.join(PEER_REQUIREMENTS)} ...", flush=True)
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(PEER_VENV)], check=True)
    subprocess.run([uv, "pip", "install", "--quiet", "--python", str(python), *PEER_REQUIREMENTS], check=True)
    return python


PINNED: dict[str, list[str]] = {}
"""With --pin: the `taskset` prefix per role ("server": the uvicorn processes, "emulator")."""


@contextmanager
def process(
    args: list[str], *, env: dict[str, str], cwd: Path, role: str = "server"
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([*PINNED.get(role, []), *args], env={**os.environ, **env}, cwd=cwd)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(url)
        time.sleep(0.1)


@contextmanager
def emulator() -> Iterator[str]:
    from fastapi_gcp_tasks.utils import emulator_client

    port = free_port()
    address = f"127.0.0.1:{port}"
    args = [sys.executable, "-m", "fastapi_gcp_tasks", "emulator", "--port", str(port), "--queue", QUEUE]
    args += ["--http-port", str(free_port()), "--log-level", "WARNING"]
    with process(args, env={}, cwd=ROOT, role="emulator") as proc:
        client = emulator_client(host=address)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError("the emulator exited")
            try:
                client.pause_queue(name=QUEUE, timeout=1)
                break
            except Exception:  # not listening yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        try:
            yield address
        finally:
            client.transport.close()  # type: ignore[no-untyped-call]


def server_command(mode: str, port: int, peer_python: Path | None) -> tuple[list[str], Path]:
    common = ["-m", "uvicorn", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    if mode.startswith("peer"):
        assert peer_python is not None
        # run from bench/buffering so that `fastapi_gcp_tasks` resolves to the peer's installed package
        return [str(peer_python), *common, "peer_app:timing"], HERE
    return [sys.executable, *common, "--app-dir", str(HERE), "app:timing"], ROOT


def count_calls(servers: dict[str, str], requests: int = 20) -> dict[tuple[str, int], str]:
    """Create calls per request: counted by the buffer's stats; one `create_task` per delay otherwise."""
    counted: dict[tuple[str, int], str] = {}
    with httpx.Client(timeout=30) as client:
        for mode, url in servers.items():
            for n in DELAYS:
                if not mode.startswith("buffered"):
                    counted[(mode, n)] = f"{n} (by construction)"
                    continue
                before = client.get(f"{url}/stats").json()
                for _ in range(requests):
                    client.post(f"{url}/d{n}").raise_for_status()
                deadline = time.monotonic() + 10
                while True:
                    after = client.get(f"{url}/stats").json()
                    if after["created"] - before["created"] >= n * requests or time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
                counted[(mode, n)] = f"{(after['calls'] - before['calls']) / requests:g}"
    return counted


Samples = dict[tuple[str, int], list[float]]


def latency(servers: dict[str, str], requests: int, warmup: int, pause: float) -> tuple[Samples, Samples]:
    """Client-side and server-side (until the response is sent) milliseconds per (mode, delays).

    `pause` seconds pass between requests, so that each one meets servers that have finished the
    previous request's work, as requests arriving apart do; without it the next request also waits for
    the CPU that the previous one's after-response sending uses on this machine.
    """
    samples: Samples = {(mode, n): [] for mode in servers for n in DELAYS}
    order = list(samples)
    shuffle = random.Random(4).shuffle
    with httpx.Client(timeout=30) as client:
        for i in range(warmup + requests):
            if i == warmup:
                for url in servers.values():
                    client.post(f"{url}/timings").raise_for_status()
            shuffle(order)
            for mode, n in order:
                times = samples[(mode, n)]
                url = f"{servers[mode]}/d{n}"
                start = time.perf_counter()
                response = client.post(url)
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                if i >= warmup:
                    times.append(elapsed * 1000)
                if pause:
                    time.sleep(pause)
        server: Samples = {}
        for mode, url in servers.items():
            taken = client.post(f"{url}/timings").json()
            for n in DELAYS:
                server[(mode, n)] = [seconds * 1000 for seconds in taken.get(f"/d{n}", [])]
    return samples, server


async def throughput(url: str, seconds: float, concurrency: int) -> float:
    done = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                (await client.post(url)).raise_for_status()
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


def in_process(mode: str, address: str, peer_python: Path | None, iterations: int) -> dict[str, dict[str, float]]:
    """Medians from `inproc.py`: the mode's app driven with ASGI messages in a process of its own."""
    python = str(peer_python) if mode.startswith("peer") else sys.executable
    module = "peer_app" if mode.startswith("peer") else "app"
    env = {**os.environ, "BENCH_MODE": mode, "BENCH_EMULATOR": address, "BENCH_QUEUE": QUEUE, "PYTHONPATH": ""}
    result = subprocess.run(
        [python, "inproc.py", module, str(iterations)], cwd=HERE, env=env, capture_output=True, text=True, check=True
    )
    timings: dict[str, dict[str, float]] = json.loads(result.stdout)
    return timings


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def versions() -> str:
    from importlib.metadata import version

    packages = ", ".join(f"{name} {version(name)}" for name in ("uvicorn", "fastapi", "grpcio"))
    return f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {packages}"


@contextmanager
def servers_for(modes: list[str], address: str, peer_python: Path | None) -> Iterator[dict[str, str]]:
    """One uvicorn process per mode, its clients talking to Cloud Tasks at `address`."""
    with ExitStack() as stack:
        servers: dict[str, str] = {}
        for mode in modes:
            port = free_port()
            command, cwd = server_command(mode, port, peer_python)
            env = {"BENCH_MODE": mode, "BENCH_EMULATOR": address, "BENCH_QUEUE": QUEUE, "PYTHONPATH": ""}
            proc = stack.enter_context(process(command, env=env, cwd=cwd))
            servers[mode] = f"http://127.0.0.1:{port}"
            wait_http(f"{servers[mode]}/stats", proc)
        yield servers


@contextmanager
def delay_proxy(address: str, rtt_ms: float) -> Iterator[str]:
    """`delay_proxy.py` in front of `address`: what the servers see as Cloud Tasks `rtt_ms` away."""
    port = free_port()
    args = [sys.executable, str(HERE / "delay_proxy.py"), str(port), address, str(rtt_ms)]
    with process(args, env={}, cwd=HERE, role="emulator") as proc:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the delay proxy did not start") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"


def latency_table(
    modes: list[str],
    samples: Samples,
    server_side: Samples,
    columns: tuple[str, ...] = (),
    cells: dict[tuple[str, int], tuple[str, ...]] | None = None,
) -> None:
    print()
    print("| mode | delays | p50 ms | p99 ms | server p50 ms | server p99 ms |" + "".join(f" {c} |" for c in columns))
    print("| --- | ---: | ---: | ---: | ---: | ---: |" + " ---: |" * len(columns))
    for mode in modes:
        for n in DELAYS:
            times, inside = samples[(mode, n)], server_side[(mode, n)]
            row = (
                f"| {mode} | {n} | {statistics.median(times):.2f} | {percentile(times, 0.99):.2f} "
                f"| {statistics.median(inside):.3f} | {percentile(inside, 0.99):.3f} |"
            )
            print(row + "".join(f" {cell} |" for cell in (cells or {}).get((mode, n), ())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="latency samples per mode and endpoint")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--pause", type=float, default=0.0, help="milliseconds between latency requests")
    parser.add_argument("--seconds", type=float, default=1.5, help="throughput run per mode and endpoint")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--inproc", type=int, default=300, help="in-process iterations per endpoint (0: skip)")
    parser.add_argument(
        "--far-rtt", type=float, default=20.0, help="round trip (ms) put in front of the emulator for the second table"
    )
    parser.add_argument("--far-requests", type=int, default=60, help="latency samples per row with the delay (0: skip)")
    parser.add_argument("--far-warmup", type=int, default=10)
    parser.add_argument(
        "--pin",
        action="store_true",
        help="uvicorn servers on CPU 1; the client and the emulator on CPU 0 (needs taskset and 2 CPUs)",
    )
    args = parser.parse_args()
    if args.pin:
        os.sched_setaffinity(0, {0})
        PINNED.update(server=["taskset", "-c", "1"], emulator=["taskset", "-c", "0"])
        print("pinned: uvicorn servers on CPU 1; this client and the emulator on CPU 0")
    modes = args.modes.split(",")
    peer_python = ensure_peer_venv() if any(m.startswith("peer") for m in modes) else None
    started = time.monotonic()
    print(f"machine: {versions()}")
    print(f"load average (1 / 5 / 15 min) at the start: {load_average()}")

    with emulator() as address:
        with servers_for(modes, address, peer_python) as servers:
            calls = count_calls(servers)
            print(
                f"latency: {args.requests} sequential requests per row (after {args.warmup} warm-up), "
                f"round-robin, {args.pause:g} ms apart"
            )
            samples, server_side = latency(servers, args.requests, args.warmup, args.pause / 1000)
            rates: dict[tuple[str, int], float] = {}
            for mode, url in servers.items():
                for n in DELAYS:
                    rates[(mode, n)] = asyncio.run(throughput(f"{url}/d{n}", args.seconds, args.concurrency))
        near_load = load_average()

        print()
        print(f"Cloud Tasks next door (the emulator on 127.0.0.1); load average after: {near_load}")
        columns = (f"max req/s (c={args.concurrency})", "create calls / request")
        cells: dict[tuple[str, int], tuple[str, ...]] = {
            (mode, n): (f"{rates[(mode, n)]:.0f}", calls[(mode, n)]) for mode in modes for n in DELAYS
        }
        latency_table(modes, samples, server_side, columns, cells)

        inproc: dict[str, dict[str, dict[str, float]]] = {}
        if args.inproc:
            for mode in modes:
                inproc[mode] = in_process(mode, address, peer_python, args.inproc)
            print()
            print(f"In process (ASGI messages, no sockets), median of {args.inproc} calls per row:")
            print()
            print("| mode | delays | us until the response is sent | us until the ASGI call returns |")
            print("| --- | ---: | ---: | ---: |")
            for mode in modes:
                for n in DELAYS:
                    row = inproc[mode][f"/d{n}"]
                    print(f"| {mode} | {n} | {row['to_response']:.0f} | {row['total']:.0f} |")

        if "buffered_after" in modes:
            base = statistics.median(samples[("buffered_after", 0)])
            one = statistics.median(samples[("buffered_after", 1)])
            print()
            print("Target: buffered after the response, 1 delay, against the p50 of the 0-delay endpoint")
            print(f"  over HTTP, client side: {one:.3f} ms vs {base:.3f} ms = {100 * (one / base - 1):+.1f}%")
            inside_base = statistics.median(server_side[("buffered_after", 0)])
            inside_one = statistics.median(server_side[("buffered_after", 1)])
            added = inside_one - inside_base
            share = 100 * added / base
            print(f"  over HTTP, server side until the response is sent: {1000 * added:+.0f} us = {share:+.1f}%")
            if inproc:
                rows = inproc["buffered_after"]
                added = (rows["/d1"]["to_response"] - rows["/d0"]["to_response"]) / 1000
                print(f"  in process until the response is sent: {1000 * added:+.0f} us = {100 * added / base:+.1f}%")

        if args.far_requests and args.far_rtt > 0:
            with delay_proxy(address, args.far_rtt) as far, servers_for(modes, far, peer_python) as servers:
                far_samples, far_server = latency(servers, args.far_requests, args.far_warmup, 0)
            print()
            print(
                f"Cloud Tasks {args.far_rtt:g} ms away (delay_proxy.py in front of the emulator), "
                f"{args.far_requests} requests per row after {args.far_warmup} warm-up; "
                f"load average after: {load_average()}"
            )
            latency_table(modes, far_samples, far_server)
    print()
    print(f"load average (1 / 5 / 15 min) at the end: {load_average()}; run took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
