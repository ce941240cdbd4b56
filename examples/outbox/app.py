"""Outbox mode: an order and its receipt task are committed together, or not at all.

`POST /orders` stores the order and delays `send_receipt` in the same SQL transaction. The relay, running in
this app's lifespan, creates the committed tasks on Cloud Tasks (here: the local emulator). An order refused
after its `.delay()` rolls back, and its task is never created. The transaction commits after the endpoint and
before the response, so an order whose commit fails (a duplicate `reference`) is answered with an error, never
with a 200 for a task that will not exist.

    fastapi-gcp-tasks emulator --queue projects/demo/locations/local/queues/receipts &
    FASTAPI_GCP_TASKS_EMULATOR_HOST=127.0.0.1:8123 uvicorn examples.outbox.app:app --port 8000
    curl -X POST 'localhost:8000/orders?sku=tea&quantity=2'    # 200: the receipt task runs shortly after
    curl -X POST 'localhost:8000/orders?sku=tea&quantity=99'   # 409: order and task rolled back together
    curl -X POST 'localhost:8000/orders?sku=cake&quantity=1&reference=A1'   # 200
    curl -X POST 'localhost:8000/orders?sku=cake&quantity=1&reference=A1'   # 409: duplicate, no second task

In production, run the relay as its own process instead (`fastapi-gcp-tasks relay --database-url ...`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Boolean, Integer, String, create_engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from fastapi_gcp_tasks import DelayedRouteBuilder, as_delayed_task
from fastapi_gcp_tasks.outbox import CloudTasksRelayClient, Relay, RelaySettings, migrate, outbox_session, outbox_sink

QUEUE = os.environ.get("EXAMPLE_QUEUE", "projects/demo/locations/local/queues/receipts")
BASE_URL = os.environ.get("EXAMPLE_BASE_URL", "http://127.0.0.1:8000")
DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///outbox-example.db")
STOCK = 10


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "example_orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(40))
    quantity: Mapped[int] = mapped_column(Integer)
    receipt_sent: Mapped[bool] = mapped_column(Boolean, default=False)
    reference: Mapped[str | None] = mapped_column(String(40), unique=True)  # the client's own id for the order


engine = create_engine(DATABASE_URL)
SessionLocal = sessionmaker(engine)
# Every .delay() in the endpoint joins this session's transaction; it commits before the response starts.
Db = Depends(outbox_session(SessionLocal))

tasks = APIRouter(
    route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url=BASE_URL, sink=outbox_sink()),
    prefix="/tasks",
)


@tasks.post("/receipt")
@as_delayed_task
def send_receipt(order_id: int) -> None:
    """The task. Cloud Tasks delivers at least once, so it is written to be idempotent."""
    with SessionLocal.begin() as session:
        order = session.get(Order, order_id)
        if order is None:
            raise HTTPException(404, f"order {order_id} does not exist")
        order.receipt_sent = True


@contextlib.asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    migrate(engine)  # the outbox tables, under their own alembic version table
    Base.metadata.create_all(engine)
    relay = Relay(engine, CloudTasksRelayClient.from_environment(), RelaySettings(poll_interval=0.2))
    async with relay.running():
        yield


app = FastAPI(lifespan=lifespan)
app.include_router(tasks)


@app.exception_handler(IntegrityError)
async def duplicate_order(_: Request, exc: IntegrityError) -> JSONResponse:
    """A constraint refused the transaction (at a flush or at the commit): the order and its task are gone."""
    return JSONResponse({"detail": "an order with this reference exists"}, status_code=409)


@app.post("/orders")
def create_order(sku: str, quantity: int, db: Session = Db, reference: str | None = None) -> dict[str, int]:
    order = Order(sku=sku, quantity=quantity, reference=reference)
    db.add(order)
    db.flush()
    send_receipt.delay(order_id=order.id)
    if quantity > STOCK:
        raise HTTPException(409, f"only {STOCK} {sku} left")  # rolls back the order and its task
    return {"order_id": order.id}


@app.get("/orders")
def list_orders(db: Session = Db) -> list[dict[str, object]]:
    return [
        {"id": o.id, "sku": o.sku, "quantity": o.quantity, "receipt_sent": o.receipt_sent}
        for o in db.scalars(select(Order).order_by(Order.id))
    ]
