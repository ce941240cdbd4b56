"""`DelayedRouteBuilder`: endpoints whose `.delay()` creates a Cloud Tasks task (sync)."""

from fastapi_gcp_tasks.build._builders import DelayedRouteBuilder

__all__ = ["DelayedRouteBuilder"]
