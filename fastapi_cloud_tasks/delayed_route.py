"""fastapi-cloud-tasks' `delayed_route` module: the same names from `fastapi_gcp_tasks.delayed_route`."""

from fastapi_gcp_tasks.delayed_route import (
    DelayedRouteBuilder,
)

__all__ = [
    "DelayedRouteBuilder",
]
