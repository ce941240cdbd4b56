"""fastapi-cloud-tasks' `scheduled_route` module: the same names from `fastapi_gcp_tasks.scheduled_route`."""

from fastapi_gcp_tasks.scheduled_route import *  # noqa: F403
from fastapi_gcp_tasks.scheduled_route import __all__ as __all__
