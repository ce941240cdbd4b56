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

Tokens are decoded and checked with PyJWT. Keys are fetched in a worker thread, cached as the key
endpoint's `Cache-Control` allows, and refetched early only when a token names an unknown key.
"""

# No `from __future__ import annotations`: older FastAPI releases (0.115) cannot resolve string annotations on the
# `__call__` of a dependency instance, and would take `request` for a query parameter.
import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from fastapi_gcp_tasks.exception import WorkerConfigError
from fastapi_gcp_tasks.receive._auth import Authenticator, verdict
from fastapi_gcp_tasks.receive._jwks import KeySet, KeysUnavailableError

__all__ = ["GOOGLE_ISSUERS", "GOOGLE_JWKS_URL", "OIDCClaims", "OIDCVerifier"]

GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
"""The `iss` values of Google-signed ID tokens."""

GOOGLE_JWKS_URL = "https://www.googleapis.com/oauth2/v3/certs"
"""Where Google publishes the keys that sign its ID tokens (the `jwks_uri` of its discovery document)."""

_MAX_TOKEN_LENGTH = 16 * 1024

MAX_TOKEN_LIFETIME = 24 * 3600
"""The longest `exp - iat` accepted, in seconds. Google's ID tokens live one hour; a longer-lived token is refused."""

# Every way a hostile token can make decoding fail: PyJWT's own errors, and what `json` and `int` raise on
# absurd input (nesting deeper than the recursion limit, numbers too large for a float or a datetime).
_UNDECODABLE = (jwt.PyJWTError, ValueError, TypeError, OverflowError, RecursionError)


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


class OIDCVerifier(Authenticator):
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
        accounts = _names(service_accounts, "service_accounts")
        if not all("@" in email and email.isascii() for email in accounts):
            raise WorkerConfigError("service_accounts must be ASCII email addresses", param="service_accounts")
        # Google writes service account emails in lower case; a token's email must match one exactly.
        self.service_accounts = frozenset(email.lower() for email in accounts)
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
        """Verify the request's bearer token; raise the HTTP error to answer when it does not pass.

        The verdict is kept for the request, so the worker pieces that run the verifier before FastAPI
        does (see `fastapi_gcp_tasks.receive`) cost no second verification.
        """
        claims: OIDCClaims = await verdict(self, request)
        return claims

    async def check(self, request: Request) -> OIDCClaims:
        """Verify the request's bearer token, without the per-request cache of `__call__`."""
        token = _bearer_token(request.headers.get("authorization"))
        if token is None:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        try:
            kid = _unverified_kid(token)
            keys = self._keys.lookup(kid)
            if keys is None:
                keys = await run_in_threadpool(self._keys.refresh, kid)
            return self._check_claims(self._decode(token, keys))
        except _InvalidTokenError as error:
            raise HTTPException(
                401, f"invalid token: {error}", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            ) from None
        except _ForbiddenTokenError as error:
            raise HTTPException(403, str(error)) from None
        except KeysUnavailableError as error:
            _unavailable(error)

    def _decode(self, token: str, keys: list[rsa.RSAPublicKey]) -> dict[str, Any]:
        """The claims of `token` once its signature, expiry, issue time and issuer are checked by PyJWT."""
        if not keys:
            raise _InvalidTokenError("signed with an unknown key")
        failure = "bad signature"
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=["RS256"],
                    issuer=sorted(self.issuers),
                    leeway=self.leeway,
                    # The audience is checked below, more strictly than PyJWT does (a list is not accepted).
                    options={"require": ["exp", "iat", "iss", "aud"], "verify_aud": False},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise _InvalidTokenError("expired") from None
            except jwt.ImmatureSignatureError:
                raise _InvalidTokenError("not valid yet: issued in the future") from None
            except jwt.InvalidIssuerError:
                raise _InvalidTokenError("issuer is not accepted") from None
            except jwt.MissingRequiredClaimError as error:
                raise _InvalidTokenError(f"token has no {error.claim!r} claim") from None
            except _UNDECODABLE as error:
                failure = f"malformed token: {error}"
                continue
            return claims
        raise _InvalidTokenError(failure)

    def _check_claims(self, claims: Mapping[str, Any]) -> OIDCClaims:
        """Checks PyJWT leaves to us, as strict as `google.oauth2.id_token`: audience, lifetime, email."""
        expires, issued = _timestamp(claims.get("exp")), _timestamp(claims.get("iat"))
        if expires is None or issued is None or expires - issued > MAX_TOKEN_LIFETIME:
            raise _InvalidTokenError(f"token lifetime is not within {MAX_TOKEN_LIFETIME} seconds")
        audience = claims.get("aud")
        if not isinstance(audience, str) or audience not in self.audiences:
            raise _InvalidTokenError("audience does not match")
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            raise _ForbiddenTokenError("the token carries no email claim")
        if email not in self.service_accounts:
            raise _ForbiddenTokenError(f"{email!r} is not allowed to call this endpoint")
        if claims.get("email_verified") is not True:
            raise _ForbiddenTokenError(f"the email {email!r} of the token is not verified")
        subject = claims.get("sub")
        return OIDCClaims(
            email=email,
            subject=subject if isinstance(subject, str) else "",
            issuer=str(claims.get("iss")),
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
    if len(token) > _MAX_TOKEN_LENGTH or not token.isascii():
        raise HTTPException(
            401, "invalid token: malformed token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    return token


def _unverified_kid(token: str) -> str | None:
    """The key id the token names, once its header passes: RS256 only, no critical extensions."""
    try:
        header = jwt.get_unverified_header(token)
    except _UNDECODABLE:
        raise _InvalidTokenError("malformed token header") from None
    # Only RS256 is accepted: `none` and HMAC algorithms would let anyone forge a token.
    if header.get("alg") != "RS256":
        raise _InvalidTokenError(f"algorithm {header.get('alg')!r} is not accepted")
    if "crit" in header:
        raise _InvalidTokenError("critical header extensions are not supported")
    kid = header.get("kid")
    return kid if isinstance(kid, str) else None


def _timestamp(value: object) -> float | None:
    """A NumericDate claim as seconds, or None when it is not a finite number a datetime can hold."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
        dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return seconds if math.isfinite(seconds) else None


def _unavailable(error: KeysUnavailableError) -> NoReturn:
    raise HTTPException(503, f"cannot verify the token now: {error}", headers={"Retry-After": "30"}) from error
