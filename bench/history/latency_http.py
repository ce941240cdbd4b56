"""Latency of a task endpoint over real HTTP, history on and off: `.venv/bin/python bench/history/latency_http.py`.

`latency.py` measures in-process, the harshest setting (no socket, nothing but the app). This one measures what
Cloud Tasks sees: the same two worker apps (`latency.worker_app`, identical but for `history=`), each served by
uvicorn in a process of its own, called over loopback HTTP/1.1 with keep-alive by `http.client` in this process, one
request at a time, in interleaved blocks (off, on, off, ...). The clock runs around each request in the client:
from sending the request to having the whole answer. Work a worker does after its answer was sent (history's
recording) counts only when it delays the next request.

Prints p50 / p99 / mean per side and the difference at p50 against the 5 % target.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import latency  # noqa: E402

TARGET = 0.05


def _serve(sock: socket.socket, database: str | None) -> None:
    """One worker process: the app with history on `database` (None: off), on uvicorn, until terminated."""
    import uvicorn

    from fastapi_gcp_tasks.history import TaskHistory

    history = None if database is None else TaskHistory(database, redact=("password",))
    config = uvicorn.Config(latency.worker_app(history), log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def _listening() -> socket.socket:
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it the
    # answer's two writes (head, body) meet the client's delayed ACK: 40 ms a request
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def _block(client: http.client.HTTPConnection, first: int, count: int, samples: list[float]) -> None:
    body = json.dumps({"to": "someone@example.com", "subject": "hello", "password": "hunter2"}).encode()
    for number in range(first, first + count):
        headers = {
            "content-type": "application/json",
            "x-cloudtasks-queuename": "latency",
            "x-cloudtasks-taskname": f"t-{number}",
            "x-cloudtasks-taskretrycount": "0",
            "x-cloudtasks-taskexecutioncount": "0",
        }
        start = time.perf_counter()
        # http.client sends a small request in one write (no Nagle / delayed-ACK stall), on a kept-alive connection
        client.request("POST", f"/tasks/send/{number}", body=body, headers=headers)
        response = client.getresponse()
        answer = response.read()
        samples.append(time.perf_counter() - start)
        if response.status != 200:
            raise RuntimeError(f"unexpected answer {response.status}: {answer!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per side (default 4000)")
    parser.add_argument("--block", type=int, default=200, help="requests per interleaved block (default 200)")
    parser.add_argument("--warmup", type=int, default=300, help="warm-up requests per side (default 300)")
    args = parser.parse_args()

    from fastapi_gcp_tasks.history import migrate

    context = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        database = f"sqlite:///{Path(folder) / 'history.db'}"
        migrate(database)
        sockets = {"off": _listening(), "on": _listening()}
        workers = {
            side: context.Process(target=_serve, args=(sock, None if side == "off" else database), daemon=True)
            for side, sock in sockets.items()
        }
        for worker in workers.values():
            worker.start()
        clients = {
            side: http.client.HTTPConnection("127.0.0.1", sock.getsockname()[1], timeout=30)
            for side, sock in sockets.items()
        }
        samples: dict[str, list[float]] = {"off": [], "on": []}
        try:
            for client in clients.values():
                _block(client, 10_000_000, args.warmup, [])
            done = 0
            while done < args.requests:
                count = min(args.block, args.requests - done)
                for side in ("off", "on"):
                    _block(clients[side], done, count, samples[side])
                done += count
        finally:
            for client in clients.values():
                client.close()
            for worker in workers.values():
                worker.terminate()
                worker.join()
            for sock in sockets.values():
                sock.close()

    print(f"{args.requests} requests per side over loopback HTTP/1.1 (uvicorn, one process per side)")
    print(f"{'history':<9}{'p50 (µs)':>10}{'p99 (µs)':>10}{'mean (µs)':>11}")
    for side in ("off", "on"):
        values = samples[side]
        print(
            f"{side:<9}{latency.quantile(values, 0.5) * 1e6:>10.0f}{latency.quantile(values, 0.99) * 1e6:>10.0f}"
            f"{statistics.fmean(values) * 1e6:>11.0f}"
        )
    off, on = (latency.quantile(samples[side], 0.5) for side in ("off", "on"))
    added = on / off - 1
    verdict = "within" if added <= TARGET else "OVER"
    print(f"\nhistory adds {added * 100:+.1f} % at p50 over HTTP ({verdict} the {TARGET * 100:.0f} % target)")


if __name__ == "__main__":
    main()
