"""SIGTERM to uvicorn with a graceful timeout, while requests run and flushes wait: every task ends in one
outcome, checked by name against the emulator, the log and the counters (`_shutdown_app.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from fastapi_gcp_tasks.emulator import Emulator
from tests._support import listening_socket, wait_for

pytestmark = pytest.mark.slow  # one uvicorn process started and stopped for the whole module

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "projects/test/locations/here/queues/shutdown"
DEADLINE = 60.0
GROUPS = {"a": 2, "b1": 2, "b2": 3, "b3": 2, "c": 2, "d": 1}
"""Tasks delayed per request of each group (see `_shutdown_app.py`); one request per group, two for `a`."""


@dataclass
class Output:
    """The server's stderr, read line by line as it comes."""

    lines: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    ended: bool = False

    def read(self, stream: Iterator[str]) -> None:
        for line in stream:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def wait_for(self, condition: Callable[[list[str]], bool], what: str) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: condition(self.lines) or self.ended, timeout=DEADLINE):
                raise TimeoutError(f"{what}: not seen in {DEADLINE}s")
            if not condition(self.lines):
                raise AssertionError(f"{what}: the server exited first:\n" + "\n".join(self.lines))

    def starting(self, prefix: str) -> list[str]:
        with self.changed:
            return [line for line in self.lines if line.startswith(prefix)]


def count(prefix: str, n: int) -> Callable[[list[str]], bool]:
    return lambda lines: sum(line.startswith(prefix) for line in lines) >= n


@dataclass
class Run:
    delayed: dict[str, list[str]]
    """Names per group, from the DELAYED lines."""
    created: set[str]
    """Names the emulator holds (its queue is paused, so nothing leaves it)."""
    dropped: list[str]
    lost: list[str]
    stats: dict[str, int]
    lines: list[str]
    returncode: int


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    with Emulator(queues=[QUEUE]) as emulator:
        client = emulator.tasks_client()
        client.pause_queue(name=QUEUE)
        sock = listening_socket()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SHUTDOWN_EMULATOR": emulator.address,
            "SHUTDOWN_QUEUE": QUEUE,
            "SHUTDOWN_TIMEOUT": "3",
        }
        args = [sys.executable, "-m", "uvicorn", "tests.buffering._shutdown_app:app", "--fd", str(sock.fileno())]
        args += ["--timeout-graceful-shutdown", "1", "--log-level", "warning", "--no-access-log"]
        with sock:
            url = "http://{}:{}".format(*sock.getsockname()[:2])
            server = subprocess.Popen(
                args, cwd=ROOT, env=env, pass_fds=[sock.fileno()], stderr=subprocess.PIPE, text=True
            )
        output = Output()
        assert server.stderr is not None
        reader = threading.Thread(target=output.read, args=(server.stderr,), daemon=True)
        reader.start()
        clients: list[threading.Thread] = []
        try:
            output.wait_for(count("READY", 1), "startup")

            def post(group: str) -> None:
                # group a: the server gives up on the request while shutting down
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(f"{url}/delay", params={"group": group, "count": GROUPS[group]}, timeout=DEADLINE)

            for group in ["c", "d", "a", "a", "b1", "b2", "b3"]:
                clients.append(threading.Thread(target=post, args=(group,)))
                clients[-1].start()
            output.wait_for(count("BLOCKED a", 2), "both group-a requests blocked in their endpoint")
            output.wait_for(count("GATE b1", 2), "the two group-b1 calls waiting")
            output.wait_for(count("GATE b2", 1), "the group-b2 batch waiting")
            output.wait_for(count("FALLBACK", 1), "the fallback holding group b3")
            output.wait_for(lambda lines: any("answered 500" in line for line in lines), "group d discarded")
            c_names = {line.split()[2] for line in output.starting("DELAYED c ")}

            def c_created() -> bool:
                return c_names <= {task.name for task in client.list_tasks(parent=QUEUE)}

            wait_for(c_created, "group c created before the shutdown", timeout=DEADLINE)

            server.send_signal(signal.SIGTERM)
            server.wait(DEADLINE)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            for thread in clients:
                thread.join(DEADLINE)
            reader.join(DEADLINE)
            server.stderr.close()
        lines = output.lines
        delayed: dict[str, list[str]] = {}
        for line in output.starting("DELAYED "):
            _, group, name = line.split()
            delayed.setdefault(group, []).append(name)
        (stats_line,) = output.starting("STATS ")
        yield Run(
            delayed=delayed,
            created={task.name for task in client.list_tasks(parent=QUEUE)},
            dropped=[line for line in lines if line.startswith("LOG WARNING dropped ")],
            lost=[line for line in lines if line.startswith("LOG ERROR task ") and " was not created " in line],
            stats=json.loads(stats_line.removeprefix("STATS ")),
            lines=lines,
            returncode=server.returncode,
        )


def outcomes_of(run: Run, name: str) -> list[str]:
    found = ["created"] if name in run.created else []
    found += ["discarded: " + line for line in run.dropped if name in line]
    found += ["lost: " + line for line in run.lost if name in line]
    return found


EXPECTED = {
    "a": "discarded: LOG WARNING dropped 2 buffered task(s) (POST /delay was cancelled)",
    "b1": "created",
    "b2": "lost: LOG ERROR task {name} was not created (the server shut down before its flush finished "
    "(shutdown_timeout=3s) while it was being created",
    "b3": "lost: LOG ERROR task {name} was not created (the server shut down before its flush finished "
    "(shutdown_timeout=3s) while the fallback held it; the fallback may have kept it): SendError(",
    "c": "created",
    "d": "discarded: LOG WARNING dropped 1 buffered task(s) (POST /delay answered 500)",
}


def test_the_server_stopped_through_the_graceful_path(run: Run) -> None:
    assert run.returncode in (0, -signal.SIGTERM), "\n".join(run.lines)
    assert any("timeout graceful shutdown exceeded" in line for line in run.lines), "uvicorn cancelled requests"
    assert {group: len(names) for group, names in run.delayed.items()} == {
        group: n * (2 if group == "a" else 1) for group, n in GROUPS.items()
    }


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_each_task_ends_in_exactly_one_outcome_named_in_the_log(run: Run, group: str) -> None:
    for name in run.delayed[group]:
        (outcome,) = outcomes_of(run, name)
        assert outcome.startswith(EXPECTED[group].format(name=name)), outcome


def test_the_counters_add_up_to_the_names(run: Run) -> None:
    names = [name for group in run.delayed.values() for name in group]
    per_outcome = {"created": 0, "discarded": 0, "lost": 0}
    for name in names:
        per_outcome[outcomes_of(run, name)[0].split(":")[0]] += 1
    assert run.stats == {
        "kept": len(names),
        "created": per_outcome["created"],
        "already_existed": 0,
        "discarded": per_outcome["discarded"],
        "failed": 0,
        "lost": per_outcome["lost"],
        "retried": 0,
        "calls": run.stats["calls"],
        "pending": 0,
    }
    assert per_outcome == {"created": 4, "discarded": 5, "lost": 5}
