"""Outbox mode: an order and its receipt task are committed together, or not at all.

`POST /orders` stores the order and delays `send_receipt` in the same SQL transaction. The relay, running in
this app's lifespan, creates the committed tasks on Cloud Tasks (here: the local emulator). An order refused
after its `.delay()` rolls back, and its task is never created.

    fastapi-gcp-tasks emulator --queue projects/demo/locations/local/queues/receipts &
    FASTAPI_GCP_TASKS_EMULATOR_HOST=127.0.0.1:8123 uvicorn examples.outbox.app:app --port 8000
    curl -X POST 'localhost:8000/orders?sku=tea&quantity=2'    # 200: the receipt task runs shortly after
    curl -X POST 'localhost:8000/orders?sku=tea&quantity=99'   # 409: order and task rolled back together

In production, run the relay as its own process instead (`fastapi-gcp-tasks relay --database-url ...`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from sqlalchemy import Boolean, Integer, String, create_engine, select
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


engine = create_engine(DATABASE_URL)
SessionLocal = sessionmaker(engine)
Db = Depends(outbox_session(SessionLocal))  # every .delay() in the endpoint joins this session's transaction

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


@app.post("/orders")
def create_order(sku: str, quantity: int, db: Session = Db) -> dict[str, int]:
    order = Order(sku=sku, quantity=quantity)
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
