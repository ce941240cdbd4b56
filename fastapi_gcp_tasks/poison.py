"""Poison messages and dead letters: re-exports from `fastapi_gcp_tasks.receive`."""

from fastapi_gcp_tasks.receive._letters import DeadLetter, DeadLetterSink, log_dead_letter
from fastapi_gcp_tasks.receive._poison import PoisonPolicy, poison_route_class

__all__ = ["DeadLetter", "DeadLetterSink", "PoisonPolicy", "log_dead_letter", "poison_route_class"]
