"""The worker side: what runs when Cloud Tasks or Cloud Scheduler calls an endpoint.

Authentication comes first (`OIDCVerifier`, or `PrivateEndpoint` for a worker behind Cloud Run IAM or
IAP); only then do the pieces that trust the delivery's headers or write something act: `max_retries`,
`PoisonPolicy` and the dead-letter sinks. `CloudTasksHeaders` and `CloudSchedulerHeaders` describe the
delivery; they never decide who is calling.
"""

from fastapi_gcp_tasks.receive._auth import Authenticator, PrivateEndpoint, WorkerRoute
from fastapi_gcp_tasks.receive._letters import DeadLetter, DeadLetterReason, DeadLetterSink, log_dead_letter
from fastapi_gcp_tasks.receive._metadata import CloudSchedulerHeaders, CloudTasksHeaders
from fastapi_gcp_tasks.receive._oidc import (
    GOOGLE_ISSUERS,
    GOOGLE_JWKS_URL,
    MAX_TOKEN_LIFETIME,
    OIDCClaims,
    OIDCVerifier,
)
from fastapi_gcp_tasks.receive._poison import PoisonPolicy, poison_route_class
from fastapi_gcp_tasks.receive._retries import max_retries
from fastapi_gcp_tasks.receive._tracing import TraceContextMiddleware

__all__ = [
    "GOOGLE_ISSUERS",
    "GOOGLE_JWKS_URL",
    "MAX_TOKEN_LIFETIME",
    "Authenticator",
    "CloudSchedulerHeaders",
    "CloudTasksHeaders",
    "DeadLetter",
    "DeadLetterReason",
    "DeadLetterSink",
    "OIDCClaims",
    "OIDCVerifier",
    "PoisonPolicy",
    "PrivateEndpoint",
    "TraceContextMiddleware",
    "WorkerRoute",
    "log_dead_letter",
    "max_retries",
    "poison_route_class",
]
