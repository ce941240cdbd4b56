"""`AsyncScheduledRouteBuilder`: `await endpoint.scheduler(...).schedule()` over the async client."""

from fastapi_gcp_tasks.build._builders import AsyncScheduledRouteBuilder

__all__ = ["AsyncScheduledRouteBuilder"]
