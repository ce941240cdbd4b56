"""fastapi-cloud-tasks' `scheduled_route` module: the same names from `fastapi_gcp_tasks.scheduled_route`."""

from fastapi_gcp_tasks.scheduled_route import (
    ScheduledRouteBuilder,
)

__all__ = [
    "ScheduledRouteBuilder",
]
