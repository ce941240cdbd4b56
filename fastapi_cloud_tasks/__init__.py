"""The import name of fastapi-cloud-tasks, kept so that its users switch by changing their dependency line.

Everything here is fastapi_gcp_tasks under the old names; new code should import `fastapi_gcp_tasks`.
"""

from fastapi_gcp_tasks.delayed_route import DelayedRouteBuilder
from fastapi_gcp_tasks.scheduled_route import ScheduledRouteBuilder

__all__ = ["DelayedRouteBuilder", "ScheduledRouteBuilder"]
