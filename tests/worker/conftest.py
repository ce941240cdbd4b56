"""Fixtures for the worker side: real RSA keys and a real HTTP server publishing a JWKS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from ._support import JWKSServer, Signer, jwk


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def signer(rsa_key: rsa.RSAPrivateKey) -> Signer:
    return Signer(rsa_key)


@pytest.fixture
def jwks_server(rsa_key: rsa.RSAPrivateKey) -> Iterator[JWKSServer]:
    server = JWKSServer(keys=[jwk(rsa_key, "key-1")])
    server.start()
    yield server
    server.stop()
