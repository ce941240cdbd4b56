"""In-process timing of one benchmark app: the app driven with ASGI messages, no sockets, no HTTP server.

`python inproc.py MODULE ITERATIONS` (run by run.py, from this directory, with BENCH_MODE etc. set)
prints JSON: for each endpoint, the median microseconds until the response's last message was sent
(`to_response`) and until the ASGI call returned (`total`, which includes after-response sending). The
endpoints take turns in a shuffled order. Both apps are plain ASGI, so the same driver runs ours and the
peer's, each in its own venv.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import random
import statistics
import sys
import time
from collections.abc import MutableMapping
from typing import Any

PATHS = ["/d0", "/d1", "/d10"]


async def measure(app: Any, iterations: int, warmup: int) -> dict[str, dict[str, float]]:
    to_response: dict[str, list[float]] = {path: [] for path in PATHS}
    total: dict[str, list[float]] = {path: [] for path in PATHS}
    order = list(PATHS)
    shuffle = random.Random(7).shuffle

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    for i in range(warmup + iterations):
        shuffle(order)
        for path in order:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0", "spec_version": "2.3"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "root_path": "",
                "headers": [(b"host", b"bench")],
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
            }
            start = time.perf_counter()
            answered: list[float] = []
            status: list[int] = []

            async def send(
                message: MutableMapping[str, Any], answered: list[float] = answered, status: list[int] = status
            ) -> None:
                if message["type"] == "http.response.start":
                    status.append(message["status"])
                elif message["type"] == "http.response.body" and not message.get("more_body", False):
                    answered.append(time.perf_counter())

            await app(scope, receive, send)
            end = time.perf_counter()
            if status != [200]:
                raise RuntimeError(f"{path} answered {status}")
            if i >= warmup:
                to_response[path].append((answered[0] - start) * 1e6)
                total[path].append((end - start) * 1e6)
    return {
        path: {"to_response": statistics.median(to_response[path]), "total": statistics.median(total[path])}
        for path in PATHS
    }


def main() -> int:
    module, iterations = sys.argv[1], int(sys.argv[2])
    app = importlib.import_module(module).app
    print(json.dumps(asyncio.run(measure(app, iterations, warmup=max(20, iterations // 10)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
