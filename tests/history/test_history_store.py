"""What the writer stores and what the queries return, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from fastapi_gcp_tasks.history import AttemptEvent, CreatedEvent, HistoryArgumentError, TaskHistory
from fastapi_gcp_tasks.history._schema import history_tables
from tests.history.conftest import HistoryDb
from tests.history.support import QUEUE, T0, attempt, created, name

S = dt.timedelta(seconds=1)


def test_a_task_and_its_attempts_are_stored_with_the_derived_status(task_history: TaskHistory) -> None:
    task_history.record_created(created("a", eta=T0 + 60 * S, dispatch_mode="outbox"))
    task_history.record_attempt(attempt("a", at=T0 + S, status_code=500, error_type="ValueError", error_message="no"))
    task_history.record_attempt(attempt("a", at=T0 + 2 * S, status_code=204, retry_count=1, trace_id="abc"))
    assert task_history.flush()
    record = task_history.get(name("a"))
    assert record is not None
    summary = record.summary
    assert (summary.status, summary.attempts, summary.last_status_code) == ("succeeded", 2, 204)
    assert (summary.queue_name, summary.endpoint, summary.dispatch_mode) == (QUEUE, "/tasks/a", "outbox")
    assert summary.created_at == T0
    assert summary.last_attempt_at == T0 + 2 * S
    assert record.eta == T0 + 60 * S
    assert record.method == "POST"
    assert record.arguments == {"n": 1}
    assert [(a.status_code, a.retry_count, a.error_type, a.trace_id) for a in record.attempts] == [
        (500, 0, "ValueError", None),
        (204, 1, None, "abc"),
    ]
    assert record.attempts[0].error_message == "no"
    assert task_history.stats.recorded == 3
    assert task_history.get("a") == record  # the short id finds it too
    assert task_history.get("missing") is None


@pytest.mark.parametrize(
    ("status_code", "outcome", "status"),
    [
        (200, "succeeded", "succeeded"),
        (503, "failed", "retrying"),
        (200, "dead_letter", "dead_letter"),
        (200, "gave_up", "failed"),
        (500, "gave_up", "failed"),
    ],
)
def test_status_of_the_last_attempt(task_history: TaskHistory, status_code: int, outcome: str, status: str) -> None:
    task_history.record_attempt(attempt("s", status_code=status_code, outcome=outcome))
    assert task_history.flush()
    record = task_history.get(name("s"))
    assert record is not None
    assert record.summary.status == status


def test_events_out_of_order_keep_the_latest_attempt_and_creation(task_history: TaskHistory) -> None:
    task_history.record_attempt(attempt("o", at=T0 + 5 * S, status_code=200))
    assert task_history.flush()
    task_history.record_attempt(attempt("o", at=T0 + S, status_code=500))  # an older attempt reported late
    task_history.record_created(created("o", at=T0))  # the creation reported last
    assert task_history.flush()
    record = task_history.get(name("o"))
    assert record is not None
    assert (record.summary.status, record.summary.attempts, record.summary.last_status_code) == ("succeeded", 2, 200)
    assert record.summary.created_at == T0
    assert [a.status_code for a in record.attempts] == [500, 200]


def test_a_created_task_without_attempts_is_pending(task_history: TaskHistory) -> None:
    task_history.record_created(created("p"))
    assert task_history.flush()
    record = task_history.get(name("p"))
    assert record is not None
    assert (record.summary.status, record.summary.attempts, record.attempts) == ("pending", 0, ())


def test_redacted_keys_never_reach_the_table(db: HistoryDb) -> None:
    with TaskHistory(db.url, redact={"password", "token"}, flush_interval=0.01, retention=None) as history:
        stored = history.arguments_for_storage(
            {"user": {"name": "ann", "password": "hunter2"}, "items": [{"token": "t0p"}], "when": T0}
        )
        assert stored == {
            "user": {"name": "ann", "password": "[redacted]"},
            "items": [{"token": "[redacted]"}],
            "when": "2026-01-02T03:04:05.123456Z",
        }
        history.record_created(created("r", arguments=stored))
        history.record_attempt(attempt("r", arguments=stored))
        assert history.flush()
    with db.engine.connect() as conn:
        raw = conn.execute(select(history_tables().tasks.c.arguments)).scalar_one()
    assert "hunter2" not in raw
    assert "t0p" not in raw
    assert json.loads(raw)["user"]["password"] == "[redacted]"


def test_store_arguments_false_stores_none(db: HistoryDb) -> None:
    with TaskHistory(db.url, store_arguments=False) as history:
        assert history.arguments_for_storage({"secret": 1}) is None


def test_find_pages_newest_first_with_filters(task_history: TaskHistory) -> None:
    for i in range(7):
        endpoint = "/tasks/a" if i % 2 else "/tasks/b"
        task_history.record_created(created(f"f{i}", at=T0 + i * S, endpoint=endpoint))
        task_history.record_attempt(
            attempt(f"f{i}", at=T0 + i * S, endpoint=endpoint, status_code=200 if i < 4 else 500)
        )
    # two tasks created at the same instant are ordered by id, and paging never skips or repeats one
    task_history.record_created(created("same-1", at=T0 + 3 * S))
    task_history.record_created(created("same-2", at=T0 + 3 * S))
    assert task_history.flush()
    seen: list[str] = []
    cursor = None
    while True:
        page = task_history.find(limit=3, cursor=cursor)
        seen.extend(item.task_name.rsplit("/", 1)[-1] for item in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen[:4] == ["f6", "f5", "f4", "same-2"]
    assert sorted(seen) == sorted([f"f{i}" for i in range(7)] + ["same-1", "same-2"])
    assert len(seen) == 9
    assert [t.task_name[-2:] for t in task_history.find(endpoint="/tasks/a").items] == ["f5", "-2", "-1", "f3", "f1"]
    assert [t.task_name[-2:] for t in task_history.find(status="retrying").items] == ["f6", "f5", "f4"]
    assert [t.task_name[-2:] for t in task_history.find(since=T0 + 5 * S).items] == ["f6", "f5"]
    assert [t.task_name[-2:] for t in task_history.find(until=T0 + S).items] == ["f0"]
    assert [t.task_name[-2:] for t in task_history.find(search="f2").items] == ["f2"]
    assert [t.task_name[-2:] for t in task_history.find(search=name("f3")).items] == ["f3"]
    assert len(task_history.find(search="tasks/b").items) == 4
    assert task_history.find(queue="other").items == ()
    assert len(task_history.find(queue=QUEUE).items) == 9
    assert task_history.endpoints() == ["/tasks/a", "/tasks/b"]


def test_search_treats_like_wildcards_as_text(task_history: TaskHistory) -> None:
    task_history.record_created(created("x_1"))
    task_history.record_created(created("xa1"))
    assert task_history.flush()
    assert [t.task_name[-3:] for t in task_history.find(search="x_").items] == ["x_1"]


def test_bad_query_arguments_name_the_parameter(task_history: TaskHistory) -> None:
    for kwargs, param in [
        ({"limit": 0}, "limit"),
        ({"limit": 5000}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"status": "done"}, "status"),
    ]:
        with pytest.raises(HistoryArgumentError) as caught:
            task_history.find(**kwargs)  # type: ignore[arg-type]
        assert caught.value.param == param
    with pytest.raises(HistoryArgumentError) as bucket:
        task_history.throughput(since=T0, bucket=dt.timedelta(0))
    assert bucket.value.param == "bucket"


def test_throughput_counts_per_endpoint_and_bucket(task_history: TaskHistory) -> None:
    minute = dt.timedelta(minutes=1)
    start = T0.replace(second=0, microsecond=0)
    for i, (offset, endpoint, code) in enumerate(
        [(0, "/a", 200), (10, "/a", 500), (70, "/a", 200), (75, "/b", 200), (130, "/b", 503), (-30, "/a", 200)]
    ):
        task_history.record_attempt(attempt(f"t{i}", at=start + offset * S, endpoint=endpoint, status_code=code))
    assert task_history.flush()
    points = task_history.throughput(since=start, bucket=minute)
    assert [(p.bucket_start - start, p.endpoint, p.succeeded, p.failed) for p in points] == [
        (dt.timedelta(0), "/a", 1, 1),
        (minute, "/a", 1, 0),
        (minute, "/b", 1, 0),
        (2 * minute, "/b", 0, 1),
    ]
    only_b = task_history.throughput(since=start, bucket=minute, endpoint="/b")
    assert [(p.bucket_start - start, p.succeeded, p.failed) for p in only_b] == [(minute, 1, 0), (2 * minute, 0, 1)]


def test_prune_deletes_what_is_older_than_the_cutoff(task_history: TaskHistory, db: HistoryDb) -> None:
    task_history.record_attempt(attempt("old", at=T0))
    task_history.record_attempt(attempt("new", at=dt.datetime.now(dt.UTC)))
    assert task_history.flush()
    assert task_history.prune(T0 + S) == 1  # the old attempt; both tasks were written just now
    record = task_history.get(name("old"))
    assert record is not None
    assert record.attempts == ()
    assert task_history.prune(dt.timedelta(days=1)) == 0
    assert task_history.prune(dt.timedelta(0)) >= 3  # every task and the new attempt
    assert task_history.find().items == ()
    with pytest.raises(HistoryArgumentError) as caught:
        TaskHistory(db.engine, retention=None).prune()
    assert caught.value.param == "older_than"


def test_counts_for_the_stats_command(task_history: TaskHistory) -> None:
    task_history.record_attempt(attempt("c1", status_code=200))
    task_history.record_attempt(attempt("c2", status_code=500))
    task_history.record_created(created("c3"))
    assert task_history.flush()
    counts = task_history.counts()
    assert counts["tasks"] == 3
    assert counts["attempts"] == 2
    assert counts["by_status"] == {"pending": 1, "retrying": 1, "succeeded": 1}
    assert counts["open_dead_letters"] == 0


def test_concurrent_writers_never_lose_each_others_attempts(db: HistoryDb) -> None:
    first = TaskHistory(db.url, flush_interval=0.01, retention=None)
    second = TaskHistory(db.url, flush_interval=0.01, retention=None)
    try:
        for i in range(200):
            for history in (first, second):
                history.record_attempt(attempt(f"shared{i % 10}", at=T0 + i * S, status_code=500))
        assert first.flush(timeout=60)
        assert second.flush(timeout=60)
        assert first.stats.dropped == second.stats.dropped == 0
    finally:
        first.close()
        second.close()
    with TaskHistory(db.url, retention=None) as reader:
        records = [reader.get(name(f"shared{i}")) for i in range(10)]
    assert [record.summary.attempts if record else None for record in records] == [40] * 10
    assert all(record is not None and len(record.attempts) == 40 for record in records)


def test_a_batch_costs_three_statements_whatever_its_size(db: HistoryDb) -> None:
    from sqlalchemy import event

    from fastapi_gcp_tasks.history._sql import write_batch

    events: list[CreatedEvent | AttemptEvent] = []
    for i in range(150):
        events += [created(f"b{i}"), attempt(f"b{i}", status_code=500), attempt(f"b{i}", at=T0 + S)]
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement.split()[0])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        with db.engine.begin() as connection:
            write_batch(connection, events)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert statements == ["INSERT", "UPDATE", "INSERT"]  # new tasks, every task's merged state, the attempts
    with TaskHistory(db.engine, retention=None) as history:
        assert history.counts()["attempts"] == 300
