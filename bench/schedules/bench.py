"""Deploying N cron jobs: a declared `Schedules` sync versus `.scheduler(...).schedule()` per job at start-up.

`python -m bench.schedules.bench [--jobs N] [--repeat R]` starts the emulator in this process and prints, for
each scenario, the RPCs each approach sends (counted on the gRPC channel, so ListJobs pages count one
each), how many of them write, the best wall time of R runs, and the jobs left that nobody declares.
RPC counts are deterministic; times depend on the machine.
"""

from __future__ import annotations

import argparse
import collections
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from fastapi import APIRouter
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler import transports

from fastapi_gcp_tasks import ScheduledRouteBuilder, location_path
from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.schedules import Schedules

LOCATION = location_path(project="bench", location="l")
WRITES = {"CreateJob", "UpdateJob", "DeleteJob"}


class Counter(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts every unary RPC by method name."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls[details.method.rsplit("/", 1)[1]] += 1
        return continuation(details, request)


def counted_client(address: str, counter: Counter) -> scheduler_v1.CloudSchedulerClient:
    channel = grpc.intercept_channel(grpc.insecure_channel(address), counter)
    return scheduler_v1.CloudSchedulerClient(transport=transports.CloudSchedulerGrpcTransport(channel=channel))


def endpoint() -> Any:
    router = APIRouter(route_class=ScheduledRouteBuilder(location_path=LOCATION, callback_base_url="http://app"))

    @router.post("/job/{n}")
    def job(n: int, region: str = "eu") -> None: ...

    return job


def declarations(n_jobs: int, *, changed: int | None = None, removed: int | None = None) -> Iterator[dict[str, Any]]:
    for n in range(n_jobs):
        if n == removed:
            continue
        cron = "5 * * * *" if n == changed else "0 * * * *"
        yield {"name": f"j{n:04}", "schedule": cron, "args": {"n": n}}


def with_registry(job: Any, client: scheduler_v1.CloudSchedulerClient, decls: list[dict[str, Any]]) -> None:
    schedules = Schedules(prefix="bench-", location_path=LOCATION, client=client)
    for d in decls:
        schedules.add(job, name=d["name"], schedule=d["schedule"], args=d["args"])
    schedules.sync()


def with_handles(job: Any, client: scheduler_v1.CloudSchedulerClient, decls: list[dict[str, Any]]) -> None:
    for d in decls:
        job.scheduler(name="bench-" + d["name"], schedule=d["schedule"], client=client).schedule(**d["args"])


def run(
    emulator: Emulator,
    approach: Callable[..., None],
    scenarios: list[tuple[str, list[dict[str, Any]]]],
    repeat: int,
) -> list[tuple[str, dict[str, int], float, int]]:
    job = endpoint()
    results = []
    best: dict[str, float] = {}
    for attempt in range(repeat):
        admin = emulator.scheduler_client()
        for stale in admin.list_jobs(parent=LOCATION):
            admin.delete_job(name=stale.name)
        for scenario, decls in scenarios:
            counter = Counter()
            client = counted_client(emulator.address, counter)
            started = time.perf_counter()
            approach(job, client, decls)
            elapsed = time.perf_counter() - started
            client.transport.close()  # type: ignore[no-untyped-call, unused-ignore]
            best[scenario] = min(best.get(scenario, elapsed), elapsed)
            if attempt == repeat - 1:
                declared = {f"{LOCATION}/jobs/bench-{d['name']}" for d in decls}
                stored = {j.name for j in emulator.scheduler_client().list_jobs(parent=LOCATION)}
                results.append((scenario, dict(counter.calls), best[scenario], len(stored - declared)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.jobs
    scenarios = [
        ("fresh deploy", list(declarations(n))),
        ("deploy, nothing changed", list(declarations(n))),
        ("one cron changed", list(declarations(n, changed=0))),
        ("one job removed", list(declarations(n, changed=0, removed=1))),
    ]
    print(f"{n} declared jobs, best of {args.repeat}, emulator over gRPC on localhost\n")
    header = (
        f"{'scenario':<25} {'approach':<22} {'RPCs':>6} {'writes':>7} {'seconds':>8} {'orphans':>8}  RPCs by method"
    )
    print(header)
    print("-" * len(header))
    with Emulator() as emulator:
        rows = {
            "Schedules.sync()": run(emulator, with_registry, scenarios, args.repeat),
            ".schedule() per job": run(emulator, with_handles, scenarios, args.repeat),
        }
    for index, (scenario, _) in enumerate(scenarios):
        for approach, results in rows.items():
            _, calls, seconds, orphans = results[index]
            total = sum(calls.values())
            writes = sum(v for k, v in calls.items() if k in WRITES)
            detail = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
            print(f"{scenario:<25} {approach:<22} {total:>6} {writes:>7} {seconds:>8.3f} {orphans:>8}  {detail}")


if __name__ == "__main__":
    main()
