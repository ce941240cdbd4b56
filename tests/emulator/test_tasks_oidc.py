"""OIDC tokens on tasks, verified the way a worker would: discovery document, JWKS, RS256 signature, claims."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.cloud import tasks_v2

from ._tasks_support import QUEUE, URL, http_task
from .conftest import Env

SERVICE_ACCOUNT = "invoker@test-project.iam.gserviceaccount.com"


def _b64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _verify(token: str, jwks: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    header_b64, claims_b64, signature_b64 = token.split(".")
    header = json.loads(_b64(header_b64))
    [key] = [key for key in jwks["keys"] if key["kid"] == header["kid"]]
    public = rsa.RSAPublicNumbers(
        e=int.from_bytes(_b64(key["e"]), "big"), n=int.from_bytes(_b64(key["n"]), "big")
    ).public_key()
    public.verify(
        _b64(signature_b64), f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )  # raises InvalidSignature
    return header, json.loads(_b64(claims_b64))


def _documents(env: Env) -> tuple[dict[str, Any], dict[str, Any]]:
    discovery = httpx.get(f"{env.emu.issuer}/.well-known/openid-configuration").json()
    return discovery, httpx.get(discovery["jwks_uri"]).json()


def test_task_with_oidc_token_carries_a_verifiable_jwt(env: Env) -> None:
    env.client.create_task(
        parent=QUEUE, task=http_task(url=URL + "?x=1", oidc=tasks_v2.OidcToken(service_account_email=SERVICE_ACCOUNT))
    )
    env.settle()
    scheme, _, token = env.worker.received[0].headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    discovery, jwks = _documents(env)
    assert discovery["issuer"] == env.emu.issuer
    assert discovery["jwks_uri"] == env.emu.jwks_url
    header, claims = _verify(token, jwks)
    assert header["alg"] == "RS256"
    assert claims["aud"] == URL + "?x=1"
    assert claims["iss"] == env.emu.issuer
    assert claims["email"] == SERVICE_ACCOUNT
    assert claims["email_verified"] is True
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["iat"] == int(env.clock.now().timestamp())


def test_explicit_audience_wins_and_a_tampered_token_fails(env: Env) -> None:
    oidc = tasks_v2.OidcToken(service_account_email=SERVICE_ACCOUNT, audience="https://my-service.run.app")
    env.client.create_task(parent=QUEUE, task=http_task(oidc=oidc))
    env.settle()
    token = env.worker.received[0].headers["authorization"].split(" ")[1]
    _, jwks = _documents(env)
    assert _verify(token, jwks)[1]["aud"] == "https://my-service.run.app"
    header, claims, signature = token.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({**json.loads(_b64(claims)), "aud": "x"}).encode()).rstrip(b"=")
    with pytest.raises(InvalidSignature):
        _verify(f"{header}.{forged.decode()}.{signature}", jwks)


def test_oidc_server_answers_only_its_documents(env: Env) -> None:
    assert httpx.get(f"{env.emu.issuer}/nothing").status_code == 404
    assert httpx.post(f"{env.emu.issuer}/jwks").status_code == 405
