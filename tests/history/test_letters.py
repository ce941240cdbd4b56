"""The dead-letter store: stored once per key, listed newest first with filters, discarded, marked replayed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import text

from fastapi_gcp_tasks.history import DeadLetterStore, HistoryArgumentError, TaskHistory
from fastapi_gcp_tasks.receive import DeadLetter
from tests.history.conftest import HistoryDb

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 654321, tzinfo=dt.UTC)


def letter(
    task: str | None = "t1", *, reason: Any = "invalid_request", path: str = "/tasks/a", **changes: Any
) -> DeadLetter:
    headers = {"content-type": "application/json", "authorization": "[redacted]"}
    if task is not None:
        headers |= {"x-cloudtasks-taskname": task, "x-cloudtasks-queuename": "q"}
    fields: dict[str, Any] = {
        "reason": reason,
        "method": "POST",
        "path": path,
        "body": b'{"n": "x"}',
        "headers": headers,
        "errors": ({"loc": ["body", "n"], "msg": "not an int"},),
        "received_at": T0,
    }
    return DeadLetter(**{**fields, **changes})


@pytest.fixture
def store(db: HistoryDb) -> DeadLetterStore:
    return DeadLetterStore(db.engine)


def test_a_letter_is_stored_with_what_replay_needs(store: DeadLetterStore) -> None:
    store(letter())
    (stored,) = store.list().items
    assert stored.key == "q/t1"
    assert (stored.reason, stored.task_name, stored.queue_name) == ("invalid_request", "t1", "q")
    assert (stored.method, stored.endpoint, stored.body) == ("POST", "/tasks/a", b'{"n": "x"}')
    assert stored.headers["authorization"] == "[redacted]"
    assert stored.errors == ({"loc": ["body", "n"], "msg": "not an int"},)
    assert stored.received_at == T0
    assert (stored.status, stored.replayed_as) == ("open", None)
    assert store.get(stored.letter_id) == stored
    assert store.get(stored.letter_id + 1000) is None


def test_a_redelivered_letter_is_stored_once(store: DeadLetterStore, db: HistoryDb) -> None:
    store(letter())
    store(letter(body=b"second delivery"))
    assert store.count() == 1
    (stored,) = store.list().items
    assert stored.body == b'{"n": "x"}'
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT deliveries FROM fastapi_gcp_tasks_dead_letters")).scalar_one() == 2
    store(letter(task=None))  # not from Cloud Tasks: no key, each one kept
    store(letter(task=None))
    assert store.count() == 3


def test_discard_and_mark_replayed_close_an_open_letter_once(store: DeadLetterStore) -> None:
    store(letter("a"))
    store(letter("b"))
    first, second = sorted(store.list().items, key=lambda item: item.letter_id)
    assert store.discard(first.letter_id)
    assert not store.discard(first.letter_id)
    assert store.mark_replayed(second.letter_id, "projects/p/locations/l/queues/q/tasks/new")
    assert not store.mark_replayed(second.letter_id, "again")
    assert not store.discard(second.letter_id)
    assert store.count() == 0
    assert store.count(None) == 2
    assert store.count("discarded") == 1
    replayed = store.get(second.letter_id)
    assert replayed is not None
    assert (replayed.status, replayed.replayed_as) == ("replayed", "projects/p/locations/l/queues/q/tasks/new")
    assert not store.discard(10_000)


def test_list_pages_newest_first_with_filters(store: DeadLetterStore) -> None:
    for i in range(5):
        store(letter(f"t{i}", reason="max_retries" if i % 2 else "invalid_request", path=f"/tasks/{i % 2}"))
    seen: list[str | None] = []
    cursor = None
    while True:
        page = store.list(limit=2, cursor=cursor)
        seen.extend(item.task_name for item in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ["t4", "t3", "t2", "t1", "t0"]
    assert [item.task_name for item in store.list(reason="max_retries").items] == ["t3", "t1"]
    assert [item.task_name for item in store.list(endpoint="/tasks/0").items] == ["t4", "t2", "t0"]
    with pytest.raises(HistoryArgumentError) as bad_cursor:
        store.list(cursor="nope")
    assert bad_cursor.value.param == "cursor"
    with pytest.raises(HistoryArgumentError) as bad_status:
        store.list(status="closed")  # type: ignore[arg-type]
    assert bad_status.value.param == "status"


def test_a_failing_database_raises_so_that_the_task_is_retried() -> None:
    from tests._support import free_port

    store = DeadLetterStore(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing")
    try:
        with pytest.raises(Exception) as caught:
            store(letter())
        assert "connect" in str(caught.value).lower()
    finally:
        store.close()


def test_the_history_shares_its_store_and_counts_open_letters(db: HistoryDb) -> None:
    with TaskHistory(db.url, retention=None) as history:
        history.dead_letters(letter())
        assert history.dead_letters.count() == 1
        assert history.counts()["open_dead_letters"] == 1
