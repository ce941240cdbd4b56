"""A buffer's fallback can hand the tasks it could not create to the transactional outbox."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from fastapi import APIRouter
from google.cloud import tasks_v2
from sqlalchemy.orm import Session

from fastapi_gcp_tasks import outbox
from fastapi_gcp_tasks.async_delayed_route import AsyncDelayedRouteBuilder
from fastapi_gcp_tasks.buffering import LostTask, task_buffer
from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.utils import async_emulator_client

MISSING = "projects/test/locations/here/queues/not-created-yet"


async def test_tasks_that_failed_to_send_end_up_as_outbox_rows(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    outbox.metadata.create_all(engine)

    def to_outbox(lost: Sequence[LostTask]) -> None:
        with Session(engine) as session, session.begin():
            sink = outbox.outbox_sink(session)
            for item in lost:
                sink.submit(item.task)

    with Emulator() as emu:
        address = emu.address
        router = APIRouter(
            route_class=AsyncDelayedRouteBuilder(
                queue_path=MISSING,
                callback_base_url="http://127.0.0.1:9",
                client=lambda: async_emulator_client(host=address),
                auto_create_queue=False,
            )
        )

        @router.post("/later")
        async def later(n: int) -> None:
            pass

        async with task_buffer(fallback=to_outbox) as buffer:
            names = [(await later.delay(n=n)).name for n in range(4)]  # type: ignore[attr-defined]

    assert buffer.report is not None
    assert len(buffer.report.failed) == 4
    assert buffer.stats.lost == 0
    with engine.connect() as connection:
        rows = connection.execute(sa.select(outbox.outbox_table.c.task_name, outbox.outbox_table.c.request)).all()
    engine.dispose()
    assert sorted(row.task_name for row in rows) == sorted(names)
    stored = tasks_v2.CreateTaskRequest.deserialize(rows[0].request)
    assert stored.parent == MISSING
    assert stored.task.http_request.url.startswith("http://127.0.0.1:9/later?n=")
