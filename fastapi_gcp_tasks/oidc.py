"""Verify the OIDC token of a task request: re-exports `fastapi_gcp_tasks.receive`'s verifier."""

from fastapi_gcp_tasks.receive._oidc import (
    GOOGLE_ISSUERS,
    GOOGLE_JWKS_URL,
    MAX_TOKEN_LIFETIME,
    OIDCClaims,
    OIDCVerifier,
)

__all__ = ["GOOGLE_ISSUERS", "GOOGLE_JWKS_URL", "MAX_TOKEN_LIFETIME", "OIDCClaims", "OIDCVerifier"]
