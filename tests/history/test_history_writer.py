"""The writer under a database that is down or slow: recording never waits or raises, drops are counted and
logged once; the thread starts on first use, stops on close and never keeps a process alive."""

from __future__ import annotations

import datetime as dt
import gc
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, create_engine, event

from fastapi_gcp_tasks.history import HistoryArgumentError, TaskHistory
from tests._support import free_port, wait_event, wait_for
from tests.history.conftest import HistoryDb
from tests.history.support import T0, attempt, created, name

HISTORY_BACKENDS = ("sqlite", "postgres")
ROOT = Path(__file__).resolve().parents[2]


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fastapi-gcp-tasks-history"]


def drop_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "fastapi_gcp_tasks.history" and r.levelno == logging.WARNING and "dropped" in r.getMessage()
    ]


@pytest.fixture
def down_url() -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"


class Gate:
    """Blocks every statement of an engine until opened, and says when the writer is blocked in one."""

    def __init__(self, engine: Engine) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()
        event.listen(engine, "before_cursor_execute", self._block)

    def _block(self, *args: Any) -> None:
        self.entered.set()
        self.open.wait()


@pytest.fixture
def slow_engine(db: HistoryDb) -> Iterator[tuple[Engine, Gate]]:
    engine = create_engine(db.url)
    gate = Gate(engine)
    try:
        yield engine, gate
    finally:
        gate.open.set()
        engine.dispose()


def test_a_database_that_is_down_drops_and_counts_and_logs_once(
    down_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_gcp_tasks.history")
    history = TaskHistory(down_url, max_queue=5, flush_interval=0.01)
    before = set(writer_threads())
    try:
        for i in range(10):
            history.record_attempt(attempt(f"d{i}"))  # returns at once: nothing here waits for the database
        threads = set(writer_threads()) - before
        assert history.flush(timeout=30)
        stats = history.stats
        assert (stats.recorded, stats.dropped, stats.queued) == (0, 10, 0)
        assert stats.write_errors >= 3  # every batch tried WRITE_ATTEMPTS times
        assert len(drop_warnings(caplog)) == 1
    finally:
        history.close(timeout=5)
    assert not any(thread.is_alive() for thread in threads)


def test_a_slow_database_never_blocks_recording_and_a_full_queue_drops_the_newest(
    db: HistoryDb, slow_engine: tuple[Engine, Gate], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_gcp_tasks.history")
    engine, gate = slow_engine
    history = TaskHistory(engine, max_queue=20, flush_interval=0.01, retention=None)
    try:
        history.record_created(created("first"))
        wait_event(gate.entered, "the writer blocked in the database")
        for i in range(23):
            history.record_attempt(attempt(f"q{i}"))
        assert history.stats.queued == 20
        assert history.stats.dropped == 3
        assert len(drop_warnings(caplog)) == 1
        gate.open.set()
        assert history.flush(timeout=30)
        assert (history.stats.recorded, history.stats.dropped) == (21, 3)
        assert history.get(name("q19")) is not None
        assert history.get(name("q20")) is None  # the newest were dropped
    finally:
        history.close(timeout=5)


def test_close_gives_up_on_a_database_that_is_down_and_stops_the_thread(down_url: str) -> None:
    history = TaskHistory(down_url, flush_interval=0.01)
    before = set(writer_threads())
    for i in range(50):
        history.record_attempt(attempt(f"c{i}"))
    (thread,) = set(writer_threads()) - before
    history.close(timeout=0.05)
    wait_for(lambda: not thread.is_alive(), "the writer thread to stop")
    assert history.stats.dropped == 50
    history.record_attempt(attempt("after"))  # after close: counted, not queued, no error
    assert history.stats.dropped == 51
    history.close()  # idempotent


def test_the_thread_starts_on_first_use_and_is_a_daemon(task_history: TaskHistory) -> None:
    before = set(writer_threads())  # other tests' histories are closed, but count only this one's
    task_history.get("nothing")
    assert set(writer_threads()) == before
    task_history.record_created(created("t"))
    (thread,) = set(writer_threads()) - before
    assert thread.daemon
    task_history.close()
    assert not thread.is_alive()


@pytest.mark.slow
def test_an_unclosed_history_does_not_keep_the_process_alive(down_url: str) -> None:
    code = (
        "from tests.history.support import attempt\n"
        "from fastapi_gcp_tasks.history import TaskHistory\n"
        f"history = TaskHistory({down_url!r})\n"
        "history.record_attempt(attempt('x'))\n"
        "print('exiting')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "exiting"


def test_the_writer_prunes_past_the_retention_by_itself(db: HistoryDb) -> None:
    with TaskHistory(db.url, flush_interval=0.01, retention=dt.timedelta(days=1)) as history:
        history.record_attempt(attempt("old", at=T0))  # long before the retention

        def pruned() -> bool:
            record = history.get(name("old"))
            return record is not None and record.attempts == ()

        wait_for(pruned, "the writer to prune the old attempt")


def test_metrics_count_what_was_recorded_and_dropped(db: HistoryDb, down_url: str) -> None:
    def sample(metric: str) -> float:
        return REGISTRY.get_sample_value(f"fastapi_gcp_tasks_history_{metric}_total") or 0.0

    before = {metric: sample(metric) for metric in ("recorded", "dropped", "write_errors")}
    with TaskHistory(db.url, flush_interval=0.01, retention=None) as history:
        history.record_created(created("m"))
        assert history.flush()
    with TaskHistory(down_url, max_queue=1, flush_interval=0.01) as failing:
        failing.record_created(created("m1"))
        failing.record_created(created("m2"))
        assert failing.flush(timeout=30)
    assert sample("recorded") - before["recorded"] == 1
    assert sample("dropped") - before["dropped"] >= 1
    assert sample("write_errors") - before["write_errors"] >= 1


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"max_queue": 0}, "max_queue"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"flush_interval": 0}, "flush_interval"),
        ({"prune_interval": -1}, "prune_interval"),
        ({"retention": dt.timedelta(0)}, "retention"),
        ({"redact": "password"}, "redact"),
        ({"database": 42}, "database"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(HistoryArgumentError) as caught:
        TaskHistory(**{"database": "sqlite://", **kwargs})
    assert caught.value.param == param


def test_a_history_dropped_without_close_writes_what_is_queued_and_its_thread_ends(db: HistoryDb) -> None:
    history = TaskHistory(db.engine, flush_interval=0.01, retention=None)
    before = set(writer_threads())
    history.record_created(created("collected"))
    (thread,) = set(writer_threads()) - before
    del history
    gc.collect()
    wait_for(lambda: not thread.is_alive(), "the writer thread to end")
    with TaskHistory(db.engine, retention=None) as reader:
        assert reader.get(name("collected")) is not None
