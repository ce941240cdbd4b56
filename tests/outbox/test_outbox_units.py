"""Small pure pieces: settings validation, URL mapping, the null client (errors: tests/core/test_transport.py)."""

from __future__ import annotations

import pytest
from google.cloud import tasks_v2

from fastapi_gcp_tasks.exception import TaskAlreadyExistsError
from fastapi_gcp_tasks.outbox import NullRelayClient, RelaySettings
from fastapi_gcp_tasks.outbox._engine import sync_url
from tests.outbox.support import prepared


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch_size", 0), ("concurrency", 0), ("max_attempts", 0), ("poll_interval", 0), ("send_timeout", 60.0)],
)
def test_settings_refuse_nonsense(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        RelaySettings(**{field: value})  # type: ignore[arg-type]


def test_backoff_grows_with_jitter_and_stays_under_the_cap() -> None:
    settings = RelaySettings(backoff_initial=1.0, backoff_max=8.0)
    for attempts, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (10, 8.0), (500, 8.0)):
        delays = [settings.backoff(attempts) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def test_async_urls_map_to_blocking_drivers() -> None:
    assert sync_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+psycopg"
    assert sync_url("mysql+aiomysql://u@h/db").drivername == "mysql+pymysql"
    assert sync_url("sqlite+aiosqlite:///x.db").drivername == "sqlite+pysqlite"
    assert sync_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"


async def test_null_client_refuses_a_name_twice() -> None:
    client = NullRelayClient()
    first, second = prepared().request, prepared().request
    results = await client.send_batch_async([first, second, first], timeout=1)
    assert isinstance(results[0], tasks_v2.Task)
    assert results[0].name == first.task.name
    assert isinstance(results[2], TaskAlreadyExistsError)
    assert client.calls == 1
