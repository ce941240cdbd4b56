"""`AsyncDelayedRouteBuilder`: endpoints whose `await .delay()` creates a Cloud Tasks task."""

from fastapi_gcp_tasks.build._builders import AsyncDelayedRouteBuilder

__all__ = ["AsyncDelayedRouteBuilder"]
