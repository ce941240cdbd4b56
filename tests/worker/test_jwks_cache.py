"""The key cache honours Cache-Control; driven with a manual clock against a real HTTP server."""

from __future__ import annotations

import pytest

from fastapi_gcp_tasks.receive._jwks import KeySet, KeysUnavailableError, cache_seconds, parse_jwks

from ._support import JWKSServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key_set(server: JWKSServer, clock: Clock, min_refresh_interval: float = 10.0) -> KeySet:
    return KeySet(server.url, timeout=5, min_refresh_interval=min_refresh_interval, monotonic=clock)


def test_max_age_decides_when_keys_are_fetched_again(jwks_server: JWKSServer) -> None:
    jwks_server.cache_control = "public, max-age=600, must-revalidate, no-transform"
    clock = Clock()
    keys = key_set(jwks_server, clock)
    assert keys.lookup("key-1") is None
    assert len(keys.refresh("key-1")) == 1
    clock.now += 599
    assert keys.lookup("key-1")
    clock.now += 2
    assert keys.lookup("key-1") is None
    keys.refresh("key-1")
    assert jwks_server.hits == 2


def test_no_store_is_reused_for_min_refresh_interval_only(jwks_server: JWKSServer) -> None:
    jwks_server.cache_control = "no-store"
    clock = Clock()
    keys = key_set(jwks_server, clock, min_refresh_interval=10)
    keys.refresh("key-1")
    clock.now += 9
    assert keys.lookup("key-1")
    clock.now += 2
    assert keys.lookup("key-1") is None


def test_failed_refresh_keeps_the_stale_keys(jwks_server: JWKSServer) -> None:
    jwks_server.cache_control = "max-age=60"
    clock = Clock()
    keys = key_set(jwks_server, clock)
    keys.refresh("key-1")
    jwks_server.status = 503
    clock.now += 61
    assert len(keys.refresh("key-1")) == 1
    assert keys.lookup("key-1")
    assert jwks_server.hits == 2


def test_nothing_cached_and_nothing_fetched_raises(jwks_server: JWKSServer) -> None:
    jwks_server.status = 500
    clock = Clock()
    keys = key_set(jwks_server, clock)
    with pytest.raises(KeysUnavailableError):
        keys.refresh(None)
    with pytest.raises(KeysUnavailableError):
        keys.refresh(None)
    assert jwks_server.hits == 1
    clock.now += 11
    jwks_server.status = 200
    assert keys.refresh(None)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"cache-control": "public, max-age=21033, must-revalidate"}, 21033),
        ({"cache-control": "max-age=100", "age": "40"}, 60),
        ({"cache-control": "max-age=100", "age": "400"}, 0),
        ({"cache-control": "private, no-cache"}, 0),
        ({"cache-control": "public"}, 300),
        ({}, 300),
    ],
)
def test_cache_seconds(headers: dict[str, str], seconds: float) -> None:
    assert cache_seconds(headers, 300) == seconds


def test_parse_jwks_skips_keys_it_cannot_use() -> None:
    document = {
        "keys": [
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "broken", "n": "", "e": "AQAB"},
        ]
    }
    assert parse_jwks(document) == {}
    with pytest.raises(ValueError, match="keys"):
        parse_jwks({"certs": []})
