"""Verify that a request really comes from Cloud Tasks or Cloud Scheduler: the OIDC token it carries.

Give the task (or job) an OIDC token for a service account (`oidc_delayed_hook`, `oidc_scheduled_hook`)
and protect the worker endpoints with an `OIDCVerifier`:

```python
verify = OIDCVerifier(audience="https://worker.example.com", service_accounts="tasks@proj.iam.gserviceaccount.com")
router = APIRouter(dependencies=[Depends(verify)])            # or on one endpoint; `claims = Depends(verify)`
```

The verifier checks the RS256 signature against the provider's published keys (Google's by default;
the emulator's JWKS in development), the expiry, the issuer, the audience, and that the token is the
verified `email` of one of the allowed service accounts. It answers 401 (with `WWW-Authenticate:
Bearer`) when the token is missing or invalid, 403 when it is valid but belongs to another account,
and 503 when the keys cannot be fetched (Cloud Tasks then retries the task later).

It is built on `cryptography` only. Keys are fetched in a worker thread, cached as the key endpoint's
`Cache-Control` allows, and refetched early only when a token names an unknown key.
"""

# No `from __future__ import annotations`: older FastAPI releases (0.115) cannot resolve string annotations on the
# `__call__` of a dependency instance, and would take `request` for a query parameter.
import base64
import binascii
import datetime as dt
import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from fastapi_gcp_tasks._worker_jwks import KeySet, KeysUnavailableError
from fastapi_gcp_tasks.exception import WorkerConfigError

__all__ = ["GOOGLE_ISSUERS", "GOOGLE_JWKS_URL", "OIDCClaims", "OIDCVerifier"]

GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
"""The `iss` values of Google-signed ID tokens."""

GOOGLE_JWKS_URL = "https://www.googleapis.com/oauth2/v3/certs"
"""Where Google publishes the keys that sign its ID tokens (the `jwks_uri` of its discovery document)."""

_MAX_TOKEN_LENGTH = 16 * 1024


@dataclass(frozen=True, slots=True)
class OIDCClaims:
    """The verified identity of the caller; what `Depends(verifier)` gives the endpoint."""

    email: str
    """The service account the token was issued to."""
    subject: str
    """The account's unique id (`sub`)."""
    issuer: str
    audience: str
    """The audience the token was accepted for (one of the verifier's)."""
    expires_at: dt.datetime
    claims: Mapping[str, Any]
    """Every claim of the token, as decoded."""


class _InvalidTokenError(Exception):
    pass


class _ForbiddenTokenError(Exception):
    pass


def _names(value: str | Iterable[str], param: str) -> frozenset[str]:
    items = [value] if isinstance(value, str) else list(value)
    if not items or not all(isinstance(item, str) and item.strip() for item in items):
        raise WorkerConfigError(f"{param} must be a non-empty string or a non-empty list of them", param=param)
    return frozenset(item.strip() for item in items)


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64decode(segment))
    except (binascii.Error, ValueError, UnicodeDecodeError) as error:
        raise _InvalidTokenError(f"malformed token {what}") from error
    if not isinstance(value, dict):
        raise _InvalidTokenError(f"malformed token {what}")
    return value


def _number(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _InvalidTokenError(f"token has no valid {name!r} claim")
    return float(value)


class OIDCVerifier:
    """A FastAPI dependency that admits only requests carrying a valid OIDC token of an allowed account.

    * `audience`: the audience(s) the tokens are issued for. Cloud Tasks uses the target URL when the
      task does not set one; set it explicitly on the sending side (for example the service's base
      URL) so one value covers every endpoint.
    * `service_accounts`: the emails of the accounts allowed to call (the tasks' `service_account_email`).
    * `issuers`: accepted `iss` values; Google's by default, the emulator's issuer in development.
    * `jwks_url`: where the signing keys are published; Google's by default, the emulator's `/jwks`
      in development.
    * `leeway`: seconds of clock skew tolerated on `exp`, `iat` and `nbf`.
    * `fetch_timeout`: seconds allowed for one fetch of the keys.
    * `min_refresh_interval`: the keys are fetched at most once per this many seconds, whatever the
      tokens say; it also bounds how long keys served with `Cache-Control: no-store` are reused.
    """

    def __init__(
        self,
        *,
        audience: str | Iterable[str],
        service_accounts: str | Iterable[str],
        issuers: str | Iterable[str] = GOOGLE_ISSUERS,
        jwks_url: str = GOOGLE_JWKS_URL,
        leeway: float = 30.0,
        fetch_timeout: float = 10.0,
        min_refresh_interval: float = 30.0,
    ) -> None:
        self.audiences = _names(audience, "audience")
        self.service_accounts = frozenset(email.lower() for email in _names(service_accounts, "service_accounts"))
        if not all("@" in email for email in self.service_accounts):
            raise WorkerConfigError("service_accounts must be email addresses", param="service_accounts")
        self.issuers = _names(issuers, "issuers")
        if not isinstance(jwks_url, str) or not jwks_url.startswith(("https://", "http://")):
            raise WorkerConfigError(f"jwks_url must be an http(s) URL, got {jwks_url!r}", param="jwks_url")
        for name, value, upper in (
            ("leeway", leeway, 300.0),
            ("fetch_timeout", fetch_timeout, 120.0),
            ("min_refresh_interval", min_refresh_interval, 86400.0),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= upper:
                raise WorkerConfigError(
                    f"{name} must be a number of seconds in [0, {upper:g}], got {value!r}", param=name
                )
        if fetch_timeout == 0:
            raise WorkerConfigError("fetch_timeout must be positive", param="fetch_timeout")
        self.leeway = float(leeway)
        self._keys = KeySet(jwks_url, timeout=float(fetch_timeout), min_refresh_interval=float(min_refresh_interval))

    @property
    def jwks_url(self) -> str:
        """Where the signing keys are fetched from."""
        return self._keys.url

    async def __call__(self, request: Request) -> OIDCClaims:
        """Verify the request's bearer token; raise the HTTP error to answer when it does not pass."""
        token = _bearer_token(request.headers.get("authorization"))
        if token is None:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        try:
            signing_input, signature, header, claims = _split(token)
            kid = header.get("kid") if isinstance(header.get("kid"), str) else None
            keys = self._keys.lookup(kid)
            if keys is None:
                keys = await run_in_threadpool(self._keys.refresh, kid)
            _check_signature(signing_input, signature, keys)
            return self._check_claims(claims)
        except _InvalidTokenError as error:
            raise HTTPException(
                401, f"invalid token: {error}", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            ) from None
        except _ForbiddenTokenError as error:
            raise HTTPException(403, str(error)) from None
        except KeysUnavailableError as error:
            _unavailable(error)

    def _check_claims(self, claims: Mapping[str, Any]) -> OIDCClaims:
        now = time.time()
        expires = _number(claims, "exp", required=True)
        assert expires is not None
        if now > expires + self.leeway:
            raise _InvalidTokenError("expired")
        issued = _number(claims, "iat", required=False)
        if issued is not None and issued > now + self.leeway:
            raise _InvalidTokenError("issued in the future")
        not_before = _number(claims, "nbf", required=False)
        if not_before is not None and not_before > now + self.leeway:
            raise _InvalidTokenError("not valid yet")
        issuer = claims.get("iss")
        if not isinstance(issuer, str) or issuer not in self.issuers:
            raise _InvalidTokenError(f"issuer {issuer!r} is not accepted")
        audience = _matching_audience(claims.get("aud"), self.audiences)
        if audience is None:
            raise _InvalidTokenError("audience does not match")
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            raise _ForbiddenTokenError("the token carries no email claim")
        if email.lower() not in self.service_accounts:
            raise _ForbiddenTokenError(f"{email} is not allowed to call this endpoint")
        if claims.get("email_verified") not in (True, "true"):
            raise _ForbiddenTokenError(f"the email {email} of the token is not verified")
        subject = claims.get("sub")
        return OIDCClaims(
            email=email,
            subject=subject if isinstance(subject, str) else "",
            issuer=issuer,
            audience=audience,
            expires_at=dt.datetime.fromtimestamp(expires, tz=dt.UTC),
            claims=dict(claims),
        )


def _bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _split(token: str) -> tuple[bytes, bytes, dict[str, Any], dict[str, Any]]:
    """The signed part, the signature, the header and the claims of a compact JWS; the header is checked."""
    if len(token) > _MAX_TOKEN_LENGTH or not token.isascii():
        raise _InvalidTokenError("malformed token")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise _InvalidTokenError("malformed token")
    header = _json_object(parts[0], "header")
    # Only RS256 is accepted: `none` and HMAC algorithms would let anyone forge a token.
    if header.get("alg") != "RS256":
        raise _InvalidTokenError(f"algorithm {header.get('alg')!r} is not accepted")
    if "crit" in header:
        raise _InvalidTokenError("critical header extensions are not supported")
    try:
        signature = _b64decode(parts[2])
    except (binascii.Error, ValueError) as error:
        raise _InvalidTokenError("malformed token signature") from error
    claims = _json_object(parts[1], "claims")
    return f"{parts[0]}.{parts[1]}".encode("ascii"), signature, header, claims


def _check_signature(signing_input: bytes, signature: bytes, keys: list[rsa.RSAPublicKey]) -> None:
    if not keys:
        raise _InvalidTokenError("signed with an unknown key")
    for key in keys:
        try:
            key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return
    raise _InvalidTokenError("bad signature")


def _matching_audience(claim: object, accepted: frozenset[str]) -> str | None:
    values = [claim] if isinstance(claim, str) else claim if isinstance(claim, list) else []
    for value in values:
        if isinstance(value, str) and value in accepted:
            return value
    return None


def _unavailable(error: KeysUnavailableError) -> NoReturn:
    raise HTTPException(503, f"cannot verify the token now: {error}", headers={"Retry-After": "30"}) from error
