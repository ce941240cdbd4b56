"""`fastapi-gcp-tasks emulator` keeps no task bodies after delivering them: its memory returns near its start."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from google.cloud import tasks_v2

from fastapi_gcp_tasks.utils import emulator_client
from tests._support import wait_for

from ._tasks_support import QUEUE, http_server
from .test_cli import _address, _emulator

_TASKS = 120
_BODY = b"x" * 900_000
_ALLOWED_GROWTH = 40 * 1024 * 1024
"""Far below the 108 MB that 120 kept bodies of 900 KB would hold, well above allocator noise."""


class _Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count = 0
    lock = threading.Lock()
    all_seen = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
        with self.lock:
            type(self).count += 1
            if type(self).count >= _TASKS + 1:
                self.all_seen.set()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _wait_idle(client: tasks_v2.CloudTasksClient) -> None:
    wait_for(lambda: not list(client.list_tasks(parent=QUEUE)), "the queue to be empty", timeout=60)


def test_memory_after_delivering_large_tasks_returns_near_its_start() -> None:
    assert sys.platform.startswith("linux"), "reads /proc"
    _Counting.count = 0
    _Counting.all_seen = threading.Event()
    with (
        http_server(_Counting) as worker,
        _emulator(["--port", "0", "--http-port", "0", "--queue", QUEUE]) as (
            process,
            lines,
        ),
    ):
        client = emulator_client(host=_address(lines))
        try:
            warm = tasks_v2.Task(http_request=tasks_v2.HttpRequest(url=f"{worker}/t", body=_BODY))
            client.create_task(parent=QUEUE, task=warm)
            _wait_idle(client)
            before = _rss(process.pid)
            for _ in range(_TASKS):
                client.create_task(parent=QUEUE, task=warm)
            assert _Counting.all_seen.wait(60), f"the worker saw {_Counting.count} of {_TASKS + 1} tasks"
            _wait_idle(client)
            growth = _rss(process.pid) - before
        finally:
            client.transport.close()  # type: ignore[no-untyped-call, unused-ignore]
    assert growth < _ALLOWED_GROWTH, f"the emulator grew by {growth / 2**20:.0f} MiB"
