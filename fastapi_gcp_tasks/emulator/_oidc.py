"""OIDC tokens for tasks with `http_request.oidc_token`, and the documents a worker needs to verify them.

Each emulator signs with its own RSA key (RS256), generated on first use because it costs tens of
milliseconds. The discovery document and the JWKS are served over plain HTTP on the emulator's HTTP port
(`_http_server.py`) so a worker in development can verify tokens the way it verifies Google's, with the
emulator's issuer instead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["TokenSigner"]

TOKEN_LIFETIME = dt.timedelta(hours=1)


class TokenSigner:
    """Signs OIDC ID tokens with one RSA key, and publishes that key as a JWKS."""

    def __init__(self, issuer: str) -> None:
        """`issuer` becomes the tokens' `iss` claim and the discovery document's `issuer`."""
        self.issuer = issuer
        self._key: rsa.RSAPrivateKey | None = None
        self._kid = ""
        self._lock = threading.Lock()

    def _private_key(self) -> rsa.RSAPrivateKey:
        with self._lock:
            if self._key is None:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                numbers = key.public_key().public_numbers()
                self._kid = hashlib.sha256(numbers.n.to_bytes(256, "big")).hexdigest()[:16]
                self._key = key
            return self._key

    def token(self, *, audience: str, email: str, now: dt.datetime) -> str:
        """An RS256 ID token for `email`, valid for one hour from `now`."""
        key = self._private_key()
        issued = int(now.timestamp())
        claims = {
            "aud": audience,
            "azp": email,
            "email": email,
            "email_verified": True,
            "exp": issued + int(TOKEN_LIFETIME.total_seconds()),
            "iat": issued,
            "iss": self.issuer,
            "sub": email,
        }
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self._kid})

    def jwks(self) -> dict[str, Any]:
        """The public key as a JSON Web Key Set."""
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._private_key().public_key()))
        return {"keys": [{**public, "alg": "RS256", "use": "sig", "kid": self._kid}]}

    def discovery(self) -> dict[str, Any]:
        """The OpenID Provider configuration document."""
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks",
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "claims_supported": ["aud", "azp", "email", "email_verified", "exp", "iat", "iss", "sub"],
        }
