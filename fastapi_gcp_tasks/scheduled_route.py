"""`ScheduledRouteBuilder`: endpoints whose `.scheduler(...).schedule()` keeps a Cloud Scheduler job."""

from fastapi_gcp_tasks.build._builders import ScheduledRouteBuilder

__all__ = ["ScheduledRouteBuilder"]
