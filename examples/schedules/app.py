"""A billing app that declares its cron jobs next to their endpoints, in one `Schedules` registry.

Nothing is written to Cloud Scheduler when this module is imported. Deploy the schedules with

    fastapi-gcp-tasks schedules plan examples.schedules.app:app     # what would change
    fastapi-gcp-tasks schedules sync examples.schedules.app:app     # apply it

The registry is found on `app.state.schedules`. With `FASTAPI_GCP_TASKS_EMULATOR_HOST` set (or
`--emulator-host`) both talk to the emulator; without it, to Cloud Scheduler.
"""

from __future__ import annotations

import datetime as dt
import logging
import os

from fastapi import APIRouter, FastAPI
from google.cloud import scheduler_v1
from google.protobuf import duration_pb2
from pydantic import BaseModel

from fastapi_gcp_tasks import ScheduledRouteBuilder, location_path
from fastapi_gcp_tasks.schedules import Schedules

logger = logging.getLogger("examples.schedules")

PROJECT = os.environ.get("GCP_PROJECT", "demo-project")
LOCATION = location_path(project=PROJECT, location=os.environ.get("GCP_LOCATION", "europe-west1"))
BASE_URL = os.environ.get("APP_URL", "http://127.0.0.1:8000")

schedules = Schedules(prefix="billing-", location_path=LOCATION, time_zone="Europe/Paris")
cron = APIRouter(route_class=ScheduledRouteBuilder(location_path=LOCATION, callback_base_url=BASE_URL), prefix="/cron")


class InvoiceRun(BaseModel):
    region: str
    dry_run: bool = False


@schedules.job(
    name="invoices-eu",
    schedule="0 6 1 * *",
    args={"run": InvoiceRun(region="eu")},
    retry_config=scheduler_v1.RetryConfig(
        retry_count=3,
        min_backoff_duration=duration_pb2.Duration(seconds=30),
        max_backoff_duration=duration_pb2.Duration(seconds=600),
    ),
    attempt_deadline=dt.timedelta(minutes=10),
)
@cron.post("/invoices")
def invoices(run: InvoiceRun) -> None:
    """Issue the month's invoices of one region."""
    logger.info("issuing invoices for %s (dry run: %s)", run.region, run.dry_run)


@schedules.job(name="reminders", schedule="0 9 * * 1-5", args={"days_overdue": 7})
@cron.post("/reminders")
def reminders(days_overdue: int) -> None:
    """Remind customers whose invoices are overdue."""
    logger.info("reminding customers %d days overdue", days_overdue)


@cron.get("/cleanup")
def cleanup() -> None:
    """Drop expired payment sessions."""
    logger.info("cleanup")


schedules.add(cleanup, name="cleanup", schedule="*/30 * * * *", time_zone="UTC")

app = FastAPI(title="billing")
app.include_router(cron)
app.state.schedules = schedules
