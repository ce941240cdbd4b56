"""`OIDCVerifier` with real RSA keys, a real JWKS server over HTTP and a real FastAPI app."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, Depends, FastAPI

from fastapi_gcp_tasks.dependencies import CloudTasksHeaders
from fastapi_gcp_tasks.exception import WorkerConfigError
from fastapi_gcp_tasks.oidc import GOOGLE_ISSUERS, OIDCClaims, OIDCVerifier
from tests._support import eventually

from ._support import ACCOUNT, AUDIENCE, JWKSServer, Signer, b64url, client_for, jwk


def make_app(verifier: OIDCVerifier) -> tuple[FastAPI, list[str]]:
    """A worker whose whole task router is protected, plus one endpoint reading the claims."""
    handled: list[str] = []
    router = APIRouter(dependencies=[Depends(verifier)])

    @router.post("/tasks/charge")
    async def charge(meta: CloudTasksHeaders = Depends()) -> dict[str, Any]:
        handled.append(meta.task_name or "")
        return {"task": meta.task_name}

    app = FastAPI()
    app.include_router(router)

    @app.post("/whoami")
    async def whoami(claims: OIDCClaims = Depends(verifier)) -> dict[str, Any]:
        return {"email": claims.email, "audience": claims.audience, "issuer": claims.issuer}

    return app, handled


@pytest.fixture
def verifier(jwks_server: JWKSServer) -> OIDCVerifier:
    return OIDCVerifier(audience=AUDIENCE, service_accounts=ACCOUNT, jwks_url=jwks_server.url)


async def call(app: FastAPI, token: str | None, path: str = "/tasks/charge", **headers: str) -> Any:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with client_for(app) as client:
        return await client.post(path, headers={"X-CloudTasks-TaskName": "t1", **headers})


async def test_valid_token_passes(verifier: OIDCVerifier, signer: Signer) -> None:
    app, handled = make_app(verifier)
    response = await call(app, signer.token())
    assert response.status_code == 200
    assert handled == ["t1"]
    who = await call(app, signer.token(iss="accounts.google.com"), "/whoami")
    assert who.json() == {"email": ACCOUNT, "audience": AUDIENCE, "issuer": "accounts.google.com"}


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "https://other.example.com"}, "audience"),
        ({"aud": ["https://other.example.com", "https://x"]}, "audience"),
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"exp": None}, "exp"),
        ({"exp": "tomorrow"}, "exp"),
        ({"iat": int(time.time()) + 3600}, "future"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
        ({"iss": "https://evil.example.com"}, "issuer"),
        ({"iss": None}, "'iss'"),
    ],
)
async def test_invalid_claims_give_401(
    verifier: OIDCVerifier, signer: Signer, claims: dict[str, Any], reason: str
) -> None:
    app, handled = make_app(verifier)
    response = await call(app, signer.token(**claims))
    assert response.status_code == 401
    assert reason in response.json()["detail"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert handled == []


async def test_audience_list_is_refused_even_with_one_match(verifier: OIDCVerifier, signer: Signer) -> None:
    # google.oauth2.id_token accepts only a string `aud` equal to an allowed audience; so do we.
    app, _ = make_app(verifier)
    assert (await call(app, signer.token(aud=["https://x", AUDIENCE]))).status_code == 401
    assert (await call(app, signer.token(aud=[AUDIENCE]))).status_code == 401


async def test_clock_skew_within_leeway_passes(verifier: OIDCVerifier, signer: Signer) -> None:
    app, _ = make_app(verifier)
    assert (await call(app, signer.token(exp=int(time.time()) - 5))).status_code == 200


def unsigned(signer: Signer, alg: str) -> str:
    header = b64url(f'{{"alg":"{alg}","typ":"JWT","kid":"key-1"}}'.encode())
    payload = b64url(json.dumps(signer.claims()).encode())
    return f"{header}.{payload}."


async def test_alg_none_is_rejected(verifier: OIDCVerifier, signer: Signer) -> None:
    app, handled = make_app(verifier)
    response = await call(app, unsigned(signer, "none"))
    assert response.status_code == 401
    token = signer.token()
    _, payload, signature = token.split(".")
    none_header = b64url(b'{"alg":"none","kid":"key-1"}')
    assert (await call(app, f"{none_header}.{payload}.{signature}")).status_code == 401
    assert handled == []


@pytest.mark.parametrize("alg", ["HS256", "RS512", "PS256", "ES256", "rs256"])
async def test_other_algorithms_are_rejected(verifier: OIDCVerifier, signer: Signer, alg: str) -> None:
    app, _ = make_app(verifier)
    response = await call(app, signer.token(header={"alg": alg, "kid": "key-1"}))
    assert response.status_code == 401
    assert "algorithm" in response.json()["detail"]


async def test_tampered_payload_fails_the_signature(verifier: OIDCVerifier, signer: Signer) -> None:
    app, handled = make_app(verifier)
    head, _, signature = signer.token().split(".")
    forged = b64url(json.dumps(signer.claims(email="attacker@evil.com")).encode())
    response = await call(app, f"{head}.{forged}.{signature}")
    assert response.status_code == 401
    assert "signature" in response.json()["detail"]
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert (await call(app, f"{head}.{signer.token().split('.')[1]}.{flipped}")).status_code == 401
    assert handled == []


async def test_token_signed_by_another_key_with_a_known_kid(
    verifier: OIDCVerifier, other_key: rsa.RSAPrivateKey
) -> None:
    app, _ = make_app(verifier)
    response = await call(app, Signer(other_key, kid="key-1").token())
    assert response.status_code == 401


async def test_unknown_kid_is_401(verifier: OIDCVerifier, other_key: rsa.RSAPrivateKey) -> None:
    app, _ = make_app(verifier)
    response = await call(app, Signer(other_key, kid="key-unknown").token())
    assert response.status_code == 401
    assert "unknown key" in response.json()["detail"]


async def test_another_service_account_gets_403(verifier: OIDCVerifier, signer: Signer) -> None:
    app, handled = make_app(verifier)
    response = await call(app, signer.token(email="someone-else@proj.iam.gserviceaccount.com"))
    assert response.status_code == 403
    assert "not allowed" in response.json()["detail"]
    assert handled == []


@pytest.mark.parametrize(
    "claims",
    [
        {"email_verified": False},
        {"email_verified": None},
        {"email": None},
        # Only Google mints these claims, and it writes a JSON boolean and the account's exact email.
        {"email_verified": "true"},
        {"email_verified": 1},
        {"email": ACCOUNT.upper()},
        {"email": ACCOUNT.replace("k", "\u212a")},  # KELVIN SIGN: lower-cases to "k"
    ],
)
async def test_unverified_missing_or_inexact_email_gets_403(
    verifier: OIDCVerifier, signer: Signer, claims: dict[str, Any]
) -> None:
    app, _ = make_app(verifier)
    assert (await call(app, signer.token(**claims))).status_code == 403


async def test_configured_accounts_are_lower_cased(jwks_server: JWKSServer, signer: Signer) -> None:
    verifier = OIDCVerifier(audience=AUDIENCE, service_accounts=[ACCOUNT.upper()], jwks_url=jwks_server.url)
    app, _ = make_app(verifier)
    assert (await call(app, signer.token())).status_code == 200


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": 10**300},
        {"exp": 1e300},
        {"iat": None},
        {"iat": "now"},
        {"exp": int(time.time()) + 25 * 3600},  # longer-lived than any Google ID token
        {"aud": {"nested": [AUDIENCE]}},
    ],
)
async def test_absurd_claims_in_a_signed_token_give_401(
    verifier: OIDCVerifier, signer: Signer, claims: dict[str, Any]
) -> None:
    app, handled = make_app(verifier)
    response = await call(app, signer.token(**claims))
    assert response.status_code == 401, response.text
    assert handled == []


@pytest.mark.parametrize(
    "segment",
    [
        "[" * 5000 + "]" * 5000,  # deeper than the recursion limit of the JSON decoder
        '{"alg": "RS256", "kid": ' + "[" * 4000 + "]" * 4000 + "}",
        '{"alg": "RS256", "n": 1e400}',
        "\ud800",
    ],
)
async def test_hostile_token_segments_give_401_not_500(verifier: OIDCVerifier, segment: str) -> None:
    encoded = b64url(segment.encode("utf-8", "surrogatepass"))
    good_header = b64url(b'{"alg":"RS256"}')
    app, handled = make_app(verifier)
    for token in (f"{encoded}.{good_header}.c2ln", f"{good_header}.{encoded}.c2ln"):
        response = await call(app, token)
        assert response.status_code == 401, response.text
    assert handled == []


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer a.b", "Bearer ..."]
)
async def test_missing_or_malformed_header_gives_401(verifier: OIDCVerifier, authorization: str | None) -> None:
    app, _ = make_app(verifier)
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await call(app, None, **headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_spoofed_cloud_tasks_headers_without_a_token_are_refused(verifier: OIDCVerifier) -> None:
    app, handled = make_app(verifier)
    spoofed = {
        "X-CloudTasks-QueueName": "payments",
        "X-CloudTasks-TaskRetryCount": "0",
        "X-CloudTasks-TaskExecutionCount": "0",
        "X-CloudTasks-TaskETA": str(time.time()),
        "User-Agent": "Google-Cloud-Tasks",
        "X-CloudScheduler": "true",
    }
    response = await call(app, None, **spoofed)
    assert response.status_code == 401
    assert handled == []


async def test_keys_are_fetched_once_not_per_request(
    verifier: OIDCVerifier, signer: Signer, jwks_server: JWKSServer
) -> None:
    app, _ = make_app(verifier)
    async with client_for(app) as client:
        responses = await asyncio.gather(
            *(client.post("/tasks/charge", headers={"Authorization": f"Bearer {signer.token()}"}) for _ in range(20))
        )
    assert [r.status_code for r in responses] == [200] * 20
    assert jwks_server.hits == 1


async def test_key_fetch_does_not_block_the_event_loop(
    verifier: OIDCVerifier, signer: Signer, jwks_server: JWKSServer
) -> None:
    """The key server answers only once a coroutine on the loop has run during the fetch: a blocking fetch
    would keep that coroutine from running, and the server would answer late with `gate_opened` false."""
    jwks_server.gate = threading.Event()

    async def open_the_gate() -> None:
        await eventually(lambda: jwks_server.hits >= 1, "the key fetch to reach the server")
        assert jwks_server.gate is not None
        jwks_server.gate.set()

    app, _ = make_app(verifier)
    opener = asyncio.create_task(open_the_gate())
    response = await call(app, signer.token())
    await opener
    assert response.status_code == 200
    assert jwks_server.gate_opened


async def test_rotated_key_is_fetched_when_a_token_names_it(
    jwks_server: JWKSServer, signer: Signer, other_key: rsa.RSAPrivateKey
) -> None:
    verifier = OIDCVerifier(
        audience=AUDIENCE, service_accounts=ACCOUNT, jwks_url=jwks_server.url, min_refresh_interval=0
    )
    app, _ = make_app(verifier)
    assert (await call(app, signer.token())).status_code == 200
    jwks_server.keys.append(jwk(other_key, "key-2"))
    assert (await call(app, Signer(other_key, kid="key-2").token())).status_code == 200
    assert jwks_server.hits == 2


async def test_unknown_kid_refetches_at_most_once_per_interval(
    verifier: OIDCVerifier, signer: Signer, jwks_server: JWKSServer, other_key: rsa.RSAPrivateKey
) -> None:
    app, _ = make_app(verifier)
    assert (await call(app, signer.token())).status_code == 200
    for _ in range(5):
        assert (await call(app, Signer(other_key, kid="nope").token())).status_code == 401
    assert jwks_server.hits == 1


async def test_unreachable_keys_give_503_so_the_task_is_retried(signer: Signer) -> None:
    verifier = OIDCVerifier(
        audience=AUDIENCE, service_accounts=ACCOUNT, jwks_url="http://127.0.0.1:9/certs", fetch_timeout=1
    )
    app, handled = make_app(verifier)
    response = await call(app, signer.token())
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert handled == []


async def test_broken_key_endpoint_gives_503(verifier: OIDCVerifier, signer: Signer, jwks_server: JWKSServer) -> None:
    jwks_server.status = 500
    app, _ = make_app(verifier)
    assert (await call(app, signer.token())).status_code == 503


def test_google_defaults() -> None:
    verifier = OIDCVerifier(audience=AUDIENCE, service_accounts=ACCOUNT)
    assert verifier.issuers == frozenset(GOOGLE_ISSUERS)
    assert verifier.jwks_url == "https://www.googleapis.com/oauth2/v3/certs"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"audience": ""}, "audience"),
        ({"audience": []}, "audience"),
        ({"service_accounts": []}, "service_accounts"),
        ({"service_accounts": "not-an-email"}, "service_accounts"),
        ({"issuers": [""]}, "issuers"),
        ({"jwks_url": "file:///etc/passwd"}, "jwks_url"),
        ({"leeway": -1}, "leeway"),
        ({"leeway": 3600}, "leeway"),
        ({"fetch_timeout": 0}, "fetch_timeout"),
        ({"min_refresh_interval": "30"}, "min_refresh_interval"),
    ],
)
def test_bad_configuration_fails_at_the_call_site(kwargs: dict[str, Any], param: str) -> None:
    arguments: dict[str, Any] = {"audience": AUDIENCE, "service_accounts": ACCOUNT, **kwargs}
    with pytest.raises(WorkerConfigError) as caught:
        OIDCVerifier(**arguments)
    assert caught.value.param == param
