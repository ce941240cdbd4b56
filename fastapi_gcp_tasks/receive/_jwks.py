"""A cached JSON Web Key Set: the public keys that OIDC tokens are checked against.

Keys are fetched only when the cache is empty or expired, or when a token names a key the cache
does not hold (providers rotate keys); never more than once per `min_refresh_interval`. Expiry
follows the response's `Cache-Control: max-age` (minus `Age`). The fetch blocks, so callers on an
event loop run `refresh` in a worker thread; concurrent refreshes are merged behind a lock.

When a refresh fails but keys from an earlier fetch exist, they stay in use and the next refresh is
tried after `min_refresh_interval`: a short outage of the key endpoint must not reject every task.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

logger = logging.getLogger("fastapi_gcp_tasks.oidc")

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|=|$)", re.IGNORECASE)


class KeysUnavailableError(Exception):
    """No keys could be fetched and none are cached; the request can neither be accepted nor refused."""


def parse_jwks(document: object) -> dict[str, rsa.RSAPublicKey]:
    """The RS256 signing keys of a JWKS document by key id; other keys are skipped."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document: no 'keys' list")
    keys: dict[str, rsa.RSAPublicKey] = {}
    for index, entry in enumerate(document["keys"]):
        if not isinstance(entry, Mapping) or entry.get("kty") != "RSA":
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", "RS256") != "RS256":
            continue
        try:
            key = jwt.PyJWK(dict(entry), algorithm="RS256").key
        except (jwt.PyJWTError, ValueError, TypeError) as error:
            logger.warning("skipping unusable key %d of the JWKS: %s", index, error)
            continue
        if not isinstance(key, rsa.RSAPublicKey):
            logger.warning("skipping key %d of the JWKS: not an RSA public key", index)
            continue
        kid = entry.get("kid")
        keys[kid if isinstance(kid, str) else f"#{index}"] = key
    return keys


def cache_seconds(headers: Mapping[str, str], default: float) -> float:
    """How long a response may be reused, from `Cache-Control` and `Age`; `default` when neither says."""
    control = headers.get("cache-control", "")
    if _NO_CACHE.search(control):
        return 0.0
    match = _MAX_AGE.search(control)
    if match is None:
        return default
    age = headers.get("age", "0").strip()
    return max(0.0, float(match.group(1)) - (float(age) if age.isdigit() else 0.0))


class KeySet:
    """The keys published at `url`, fetched on demand and cached."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        min_refresh_interval: float,
        default_max_age: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.min_refresh_interval = min_refresh_interval
        self.default_max_age = default_max_age
        self._monotonic = monotonic
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._expires_at = float("-inf")
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()
        self.fetches = 0
        """How many fetches were attempted; exposed for tests and benchmarks."""

    def lookup(self, kid: str | None) -> list[rsa.RSAPublicKey] | None:
        """The candidate keys for `kid` from the cache, or None when the cache must be refreshed first.

        An empty list means: the key is unknown and the cache was refreshed too recently to try again.
        """
        now = self._monotonic()
        if now >= self._expires_at or not self._keys:
            return None
        candidates = self._candidates(kid)
        if candidates or now - self._fetched_at < self.min_refresh_interval:
            return candidates
        return None

    def _candidates(self, kid: str | None) -> list[rsa.RSAPublicKey]:
        keys = self._keys
        if kid is None:
            return list(keys.values())
        key = keys.get(kid)
        return [key] if key is not None else []

    def refresh(self, kid: str | None) -> list[rsa.RSAPublicKey]:
        """Fetch the keys unless another thread just did, then return the candidates for `kid`.

        Blocking; raises `KeysUnavailableError` when nothing could be fetched and nothing is cached.
        """
        with self._lock:
            cached = self.lookup(kid)
            if cached is not None:
                return cached
            now = self._monotonic()
            if now - self._fetched_at >= self.min_refresh_interval:
                self._fetch(now)
            if not self._keys:
                raise KeysUnavailableError(f"no signing keys available from {self.url}")
            return self._candidates(kid)

    def _fetch(self, now: float) -> None:
        self.fetches += 1
        self._fetched_at = now
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=True) as client:
                response = client.get(self.url, headers={"Accept": "application/json"})
                response.raise_for_status()
                keys = parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as error:
            # Stale keys stay valid until the next attempt: a provider outage must not reject every task.
            self._expires_at = now + self.min_refresh_interval
            if self._keys:
                logger.warning("refreshing OIDC keys from %s failed, keeping cached keys: %s", self.url, error)
            else:
                logger.error("fetching OIDC keys from %s failed: %s", self.url, error)
            return
        if not keys:
            logger.error("the JWKS at %s holds no RS256 signing key", self.url)
        self._keys = keys
        lifetime = cache_seconds(response.headers, self.default_max_age)
        self._expires_at = now + max(lifetime, self.min_refresh_interval)
