"""The worker under attack, end to end: a real uvicorn server on loopback, real HTTP, a real `OIDCVerifier`.

An attacker can send any header (`X-CloudTasks-*` and `X-CloudScheduler*` included) and any body, and can
forge tokens, but cannot sign with the trusted keys. Whatever the way the verifier and the acting pieces
(`max_retries`, `PoisonPolicy`) are combined on a route, such a request must be refused with 401 or 403
before anything acts on it: no dead letter, no handler run. Each matrix test also sends the same requests
with a valid token (the positive control), so that it fails if the pieces stop acting at all.

Tokens come from two real signers: the `Signer` of the worker tests (a JWKS served by `JWKSServer`) and
the emulator, whose tokens are obtained the way a worker gets them: from tasks it delivers.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from google.cloud import tasks_v2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fastapi_gcp_tasks.delayed_route import DelayedRouteBuilder
from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.receive import (
    CloudSchedulerHeaders,
    CloudTasksHeaders,
    DeadLetter,
    OIDCClaims,
    OIDCVerifier,
    PoisonPolicy,
    WorkerRoute,
    _auth,
    max_retries,
    poison_route_class,
)

from ._support import ACCOUNT, AUDIENCE, ISSUER, JWKSServer, Signer, b64url, jwk, serve_app

QUEUE = "projects/test-project/locations/europe-west1/queues/attacks"
INTRUDER = "intruder@other-project.iam.gserviceaccount.com"
PATH = "/tasks/charge"
REFUSED = frozenset({401, 403})


class Charge(BaseModel):
    order: str
    cents: int


# ------------------------------------------------------------------------------------------------ helpers


@dataclass
class Recorder:
    """What the worker did: dead letters written and handler runs."""

    letters: list[DeadLetter] = field(default_factory=list)
    handled: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def sink(self, letter: DeadLetter) -> None:
        json.dumps(letter.to_dict())  # a letter must always be storable as JSON
        with self.lock:
            self.letters.append(letter)

    def ran(self, order: str) -> None:
        with self.lock:
            self.handled.append(order)

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return len(self.letters), len(self.handled)


def _no_client() -> tasks_v2.CloudTasksClient:
    raise AssertionError("the worker side must never create a Cloud Tasks client")


def spoofed(task: str) -> dict[str, str]:
    """Every header Cloud Tasks and Cloud Scheduler put on a delivery, forged; `task` keeps letters apart."""
    return {
        "X-CloudTasks-TaskName": task,
        "X-CloudTasks-QueueName": "attacks",
        "X-CloudTasks-TaskRetryCount": "999",
        "X-CloudTasks-TaskExecutionCount": "999",
        "X-CloudScheduler": "true",
        "X-CloudScheduler-JobName": "evil-job",
        "X-CloudScheduler-ScheduleTime": "2026-01-01T00:00:00Z",
    }


@dataclass(frozen=True)
class Body:
    content: bytes
    content_type: str


BODIES: dict[str, Body] = {
    "valid": Body(b'{"order": "o-1", "cents": 100}', "application/json"),
    "malformed json": Body(b'{"order": "o-1", "cents": ', "application/json"),
    "json failing validation": Body(b'{"order": "o-1", "cents": "a lot"}', "application/json"),
    "form": Body(b"order=o-1&cents=x", "application/x-www-form-urlencoded"),
    "text": Body(b"charge o-1, 100 cents", "text/plain"),
    "raw bytes": Body(b"\x00\xff\xfe\x80garbage\r\n", "application/octet-stream"),
}


def http_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60)


def post(client: httpx.Client, body: Body, token: str | None, task: str) -> httpx.Response:
    headers = {**spoofed(task), "Content-Type": body.content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.post(PATH, content=body.content, headers=headers)


# ------------------------------------------------------------------------------------------------ tokens


def _segment(value: object) -> str:
    return b64url(json.dumps(value).encode())


def sign_raw(key: rsa.RSAPrivateKey, header: str, payload: str) -> str:
    """An RS256 token over exactly these JSON texts (which may be anything a JSON parser chokes on)."""
    signing_input = f"{b64url(header.encode())}.{b64url(payload.encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def hs256_with_public_key(key: rsa.RSAPrivateKey, claims: dict[str, Any], kid: str) -> str:
    """The algorithm-confusion forgery: HMAC-SHA256 keyed with the PEM of the trusted public key."""
    secret = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{_segment({'alg': 'HS256', 'kid': kid, 'typ': 'JWT'})}.{_segment(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def unsigned(claims: dict[str, Any], kid: str) -> str:
    return f"{_segment({'alg': 'none', 'kid': kid, 'typ': 'JWT'})}.{_segment(claims)}."


KELVIN = ACCOUNT.replace("k", "\u212a")  # KELVIN SIGN: casefolds (and lower-cases) to "k"
assert KELVIN != ACCOUNT
assert KELVIN.lower() == ACCOUNT


def signer_forgeries(signer: Signer, other: rsa.RSAPrivateKey) -> dict[str, str | None]:
    """Tokens an attacker can make against a verifier trusting `signer`'s key."""
    now = int(time.time())
    return {
        "no token": None,
        "not a JWT": "not-a-token",
        "signed by another key": Signer(other).token(),
        "another key under an unknown kid": Signer(other, kid="key-2").token(),
        "alg none": unsigned(signer.claims(), signer.kid),
        "alg none, empty kid": unsigned(signer.claims(), ""),
        "HS256 keyed with the public key": hs256_with_public_key(signer.key, signer.claims(), signer.kid),
        "tampered claims": _tamper(signer.token(), email=ACCOUNT, aud=AUDIENCE, exp=now + 7200),
        "wrong audience": signer.token(aud="https://attacker.example.com"),
        "wrong account": signer.token(email=INTRUDER),
        "no email": signer.token(email=None),
        'email_verified "true"': signer.token(email_verified="true"),
        "email_verified 1": signer.token(email_verified=1),
        "email_verified missing": signer.token(email_verified=None),
        "aud list holding the audience": signer.token(aud=[AUDIENCE]),
        "aud list holding the audience and another": signer.token(aud=[AUDIENCE, "https://attacker.example.com"]),
        "email in upper case": signer.token(email=ACCOUNT.upper()),
        "email with a KELVIN SIGN": signer.token(email=KELVIN),
        "email with trailing space": signer.token(email=ACCOUNT + " "),
        "wrong issuer": signer.token(iss="https://attacker.example.com"),
        "expired": signer.token(iat=now - 7200, exp=now - 3600),
        "lives 25 hours": signer.token(iat=now, exp=now + 25 * 3600),
        "no iat": signer.token(iat=None),
        "no exp": signer.token(exp=None),
        "exp 1e300": signer.token(exp=1e300),
        "critical header": signer.token(header={"alg": "RS256", "kid": signer.kid, "crit": ["x"], "x": 1}),
    }


def _unb64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _tamper(token: str, **claims: Any) -> str:
    header, payload, signature = token.split(".")
    decoded = json.loads(_unb64(payload))
    return f"{header}.{_segment({**decoded, **claims})}.{signature}"


@dataclass(frozen=True)
class EmulatorTokens:
    """Tokens the emulator signed for tasks it delivered, and where its keys are published."""

    issuer: str
    jwks_url: str
    valid: str
    wrong_audience: str
    intruder: str
    default_audience: str
    """A task without an explicit audience: the emulator uses the task's URL, which is not the verifier's."""


@pytest.fixture(scope="module")
def emulator_tokens() -> Iterator[EmulatorTokens]:
    async def answer(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wanted = {
        "valid": (ACCOUNT, AUDIENCE),
        "wrong_audience": (ACCOUNT, "https://attacker.example.com"),
        "intruder": (INTRUDER, AUDIENCE),
        "default_audience": (ACCOUNT, ""),
    }
    with Emulator(deliver_to=answer, queues=[QUEUE]) as emu:
        client = emu.tasks_client()
        for name, (account, audience) in wanted.items():
            client.create_task(
                parent=QUEUE,
                task=tasks_v2.Task(
                    http_request=tasks_v2.HttpRequest(
                        url=f"http://worker.test/mint/{name}",
                        http_method=tasks_v2.HttpMethod.POST,
                        oidc_token=tasks_v2.OidcToken(service_account_email=account, audience=audience),
                    )
                ),
            )
        emu.wait_until_idle(timeout=60)
        tokens: dict[str, str] = {}
        for delivery in emu.deliveries:
            scheme, _, token = delivery.headers["Authorization"].partition(" ")
            assert scheme == "Bearer"
            tokens[delivery.url.rsplit("/", 1)[1]] = token
        assert set(tokens) == set(wanted)
        yield EmulatorTokens(issuer=emu.issuer, jwks_url=emu.jwks_url, **tokens)


@dataclass(frozen=True)
class TokenSource:
    verifier: OIDCVerifier
    valid: str
    forgeries: dict[str, str | None]


@pytest.fixture(params=["signer", "emulator"])
def source(
    request: pytest.FixtureRequest, rsa_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> Iterator[TokenSource]:
    signer = Signer(rsa_key)
    if request.param == "signer":
        server = JWKSServer(keys=[jwk(rsa_key, signer.kid)])
        server.start()
        try:
            emu: EmulatorTokens = request.getfixturevalue("emulator_tokens")
            forgeries = signer_forgeries(signer, other_key)
            forgeries["the emulator's valid token"] = emu.valid
            yield TokenSource(
                OIDCVerifier(audience=AUDIENCE, service_accounts=ACCOUNT, issuers=ISSUER, jwks_url=server.url),
                signer.token(),
                forgeries,
            )
        finally:
            server.stop()
        return
    emu = request.getfixturevalue("emulator_tokens")
    # A Signer that claims the emulator's issuer and the kid of its key, but signs with a key of its own.
    kid = json.loads(_unb64(emu.valid.split(".")[0]))["kid"]
    impostor = Signer(other_key, kid=kid)
    yield TokenSource(
        OIDCVerifier(audience=AUDIENCE, service_accounts=ACCOUNT, issuers=emu.issuer, jwks_url=emu.jwks_url, leeway=60),
        emu.valid,
        {
            "no token": None,
            "emulator token for another audience": emu.wrong_audience,
            "emulator token for another account": emu.intruder,
            "emulator token for the task's URL": emu.default_audience,
            "emulator's kid, another key": impostor.token(iss=emu.issuer),
            "emulator token, claims tampered": _tamper(emu.wrong_audience, aud=AUDIENCE),
            "emulator token, alg none": unsigned(_claims_of(emu.valid), kid),
            "HS256 keyed with the public key": _hs256_with_jwks(emu, kid),
            "the Signer's token": Signer(rsa_key).token(),
        },
    )


def _claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(_unb64(token.split(".")[1]))
    return claims


def _hs256_with_jwks(emu: EmulatorTokens, kid: str) -> str:
    [key] = httpx.get(emu.jwks_url).json()["keys"]
    public = rsa.RSAPublicNumbers(
        e=int.from_bytes(_unb64(key["e"]), "big"), n=int.from_bytes(_unb64(key["n"]), "big")
    ).public_key()
    secret = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{_segment({'alg': 'HS256', 'kid': kid, 'typ': 'JWT'})}.{_segment(_claims_of(emu.valid))}"
    return f"{signing_input}.{b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


# ------------------------------------------------------------------------------------------------ the apps

PLACEMENTS = ["app", "router", "route", "parameter", "include_router"]
GUARDS = [
    "max_retries in the list before the verifier, WorkerRoute",
    "max_retries as a parameter before the verifier, WorkerRoute",
    "max_retries in the list before the verifier, plain APIRoute",
    "max_retries as a parameter before the verifier, plain APIRoute",
    "PoisonPolicy via poison_route_class(APIRoute)",
    "PoisonPolicy via DelayedRouteBuilder",
    "PoisonPolicy(handler_errors_after=0), handler raises",
]


def _is_retries(guard: str) -> bool:
    return guard.startswith("max_retries")


def _is_plain(guard: str) -> bool:
    return guard.endswith("plain APIRoute")


def make_endpoint(rec: Recorder, verify: Any, retries: Any, *, raises: bool) -> Callable[..., Any]:
    """The handler, with the verifier and `max_retries` as parameters when given (`max_retries` first)."""

    def run(payload: Charge) -> dict[str, str]:
        rec.ran(payload.order)
        if raises:
            raise RuntimeError("payment provider down")
        return {"charged": payload.order}

    if verify is not None and retries is not None:

        async def with_both(payload: Charge, _: None = retries, claims: OIDCClaims = verify) -> dict[str, str]:
            assert claims.email == ACCOUNT
            return run(payload)

        return with_both
    if verify is not None:

        async def with_verifier(payload: Charge, claims: OIDCClaims = verify) -> dict[str, str]:
            assert claims.email == ACCOUNT
            return run(payload)

        return with_verifier
    if retries is not None:

        async def with_retries(payload: Charge, _: None = retries) -> dict[str, str]:
            return run(payload)

        return with_retries

    async def plain(payload: Charge) -> dict[str, str]:
        return run(payload)

    return plain


def build_app(placement: str, guard: str, verifier: OIDCVerifier | None, rec: Recorder) -> FastAPI:
    """The worker app: `verifier` declared at `placement` (None: no verifier at all), protected by `guard`."""
    auth = Depends(verifier) if verifier is not None else None
    retries = Depends(max_retries(3, on_give_up=rec.sink)) if _is_retries(guard) else None
    policy = PoisonPolicy(sink=rec.sink, handler_errors_after=0 if "handler_errors_after" in guard else None)
    route_class: type[APIRoute]
    if _is_retries(guard):
        route_class = APIRoute if _is_plain(guard) else WorkerRoute
    elif "DelayedRouteBuilder" in guard:
        route_class = DelayedRouteBuilder(
            queue_path=QUEUE,
            callback_base_url="http://worker.test",
            client=_no_client,
            auto_create_queue=False,
            poison_policy=policy,
        )
    else:
        route_class = poison_route_class(APIRoute, policy)
    retries_in_list = retries is not None and "in the list" in guard

    def dependencies(here: bool) -> list[Any]:
        """The dependency list at one level: `max_retries` first, then the verifier, when it is declared here."""
        if not here or auth is None:
            return []
        return [retries, auth] if retries_in_list else [auth]

    route_dependencies = dependencies(placement == "route")
    if retries_in_list and (placement == "parameter" or auth is None):
        route_dependencies.insert(0, retries)
    endpoint = make_endpoint(
        rec,
        auth if placement == "parameter" else None,
        retries if retries is not None and not retries_in_list else None,
        raises="handler raises" in guard,
    )
    app = FastAPI(dependencies=dependencies(placement == "app"))
    router = APIRouter(route_class=route_class, dependencies=dependencies(placement == "router"))
    router.add_api_route(PATH, endpoint, methods=["POST"], dependencies=route_dependencies)
    app.include_router(router, dependencies=dependencies(placement == "include_router"))
    app.state.route = router.routes[-1]
    return app


@dataclass(frozen=True)
class Expected:
    status: int
    letter: str | None
    ran: bool


def control(guard: str, body: str) -> Expected:
    """What a request with a valid token, forged task headers (retry 999) and `body` gets."""
    if _is_retries(guard):
        if body == "malformed json":  # FastAPI answers a body that is not JSON before any dependency runs
            return Expected(422, None, ran=False)
        return Expected(200, "max_retries", ran=False)
    if body == "valid":
        if "handler raises" in guard:
            return Expected(200, "handler_error", ran=True)
        return Expected(200, None, ran=True)
    return Expected(200, "invalid_request", ran=False)


# ------------------------------------------------------------------------------------------------ 1. the matrix


@pytest.mark.parametrize("guard", GUARDS)
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_attackers_are_refused_before_anything_acts(placement: str, guard: str, source: TokenSource) -> None:
    rec = Recorder()
    app = build_app(placement, guard, source.verifier, rec)
    wrong: list[str] = []
    with serve_app(app) as url, http_client(url) as client:
        for token_name, token in source.forgeries.items():
            for body_name, body in BODIES.items():
                before = rec.snapshot()
                response = post(client, body, token, f"attack-{uuid.uuid4().hex}")
                allowed = REFUSED | ({422} if _is_plain(guard) and body_name == "malformed json" else set())
                if response.status_code not in allowed:
                    wrong.append(f"{token_name} + {body_name}: {response.status_code} {response.text[:200]}")
                if rec.snapshot() != before:
                    wrong.append(
                        f"{token_name} + {body_name}: acted (letters, handler runs) {before} -> {rec.snapshot()}"
                    )
        assert rec.letters == []
        assert rec.handled == []
        # The positive control: the same requests with a valid token do act, so the assertions above can fail.
        for body_name, body in BODIES.items():
            task = f"control-{uuid.uuid4().hex}"
            expected = control(guard, body_name)
            letters_before, handled_before = rec.snapshot()
            response = post(client, body, source.valid, task)
            letters = rec.letters[letters_before:]
            seen = Expected(
                response.status_code, letters[0].reason if letters else None, len(rec.handled) > handled_before
            )
            if seen != expected or len(letters) > 1:
                wrong.append(f"control {body_name}: expected {expected}, got {seen} ({len(letters)} letters)")
            for letter in letters:
                if letter.task_name != task or letter.headers.get("authorization") != "[redacted]":
                    wrong.append(f"control {body_name}: letter {letter.to_dict()}")
    assert wrong == []


def test_the_matrix_builds_what_it_says() -> None:
    """A check of the test itself: route classes, and `max_retries` declared before the verifier."""
    rec = Recorder()
    verifier = OIDCVerifier(audience=AUDIENCE, service_accounts=ACCOUNT, issuers=ISSUER, jwks_url="http://127.0.0.1:9")
    for placement in PLACEMENTS:
        for guard in GUARDS:
            app = build_app(placement, guard, verifier, rec)
            route: APIRoute = app.state.route
            if _is_retries(guard):
                assert isinstance(route, WorkerRoute) != _is_plain(guard), (placement, guard)
            else:
                assert isinstance(getattr(route, "poison_policy", None), PoisonPolicy), (placement, guard)
            # The route's own dependant holds the router's, the route's and the parameters' dependencies.
            calls = list(_auth.dependency_calls(route.dependant))
            assert (verifier in calls) == (placement in ("router", "route", "parameter")), (placement, guard)
            limits = [call for call in calls if getattr(call, "fastapi_gcp_tasks_max_retries", None) == 3]
            if not _is_retries(guard) or ("in the list" in guard and placement in ("app", "include_router")):
                assert limits == [], (placement, guard)  # the list that holds them both is not the route's
                continue
            [limit] = limits
            if verifier in calls and ("in the list" in guard or placement == "parameter"):
                assert calls.index(limit) < calls.index(verifier), (placement, guard)


@pytest.mark.parametrize("guard", [guard for guard in GUARDS if not _is_retries(guard)])
def test_an_authenticated_task_with_a_body_that_is_not_utf8_is_dead_lettered(
    guard: str, signer: Signer, jwks_server: JWKSServer
) -> None:
    rec = Recorder()
    verifier = OIDCVerifier(audience=AUDIENCE, service_accounts=ACCOUNT, issuers=ISSUER, jwks_url=jwks_server.url)
    with serve_app(build_app("router", guard, verifier, rec)) as url, http_client(url) as client:
        response = post(client, BODIES["raw bytes"], signer.token(), "t-binary")
    assert response.status_code == 200, response.text
    [letter] = rec.letters
    assert (letter.reason, letter.body) == ("invalid_request", BODIES["raw bytes"].content)


# ------------------------------------------------------------------------------------------------ 2. no authenticator


# On a plain APIRoute, FastAPI itself answers 500 to a body that is not UTF-8 (its 422 handler cannot encode the
# body it quotes; worker routes make it printable first); the other bad bodies show the pieces doing nothing.
UTF8_BODIES = {name: body for name, body in BODIES.items() if name != "raw bytes"}


@pytest.mark.parametrize(
    "guard",
    [
        "max_retries in the list before the verifier, WorkerRoute",
        "max_retries as a parameter before the verifier, plain APIRoute",
        "PoisonPolicy via poison_route_class(APIRoute)",
        "PoisonPolicy via DelayedRouteBuilder",
        "PoisonPolicy(handler_errors_after=0), handler raises",
    ],
)
def test_without_an_authenticator_task_headers_are_not_trusted(guard: str, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    app = build_app("route", guard, None, rec)
    caplog.set_level(logging.ERROR, logger="fastapi_gcp_tasks.worker")
    statuses: dict[str, int] = {}
    with serve_app(app) as url:
        for body_name, body in UTF8_BODIES.items():
            for attempt in range(2):
                # A connection each: uvicorn drops the connection of a request whose handler raised.
                with http_client(url) as client:
                    response = post(client, body, None, f"t-{uuid.uuid4().hex}")
                statuses[f"{body_name} #{attempt}"] = response.status_code
    assert rec.letters == []
    if _is_retries(guard):
        # max_retries does nothing: the valid body reaches the handler however high the forged retry count.
        assert statuses == {
            f"{name} #{attempt}": 200 if name == "valid" else 422 for name in UTF8_BODIES for attempt in range(2)
        }
        assert rec.handled == ["o-1", "o-1"]
        what = "max_retries"
    elif "handler raises" in guard:
        assert statuses == {
            f"{name} #{attempt}": 500 if name == "valid" else 422 for name in UTF8_BODIES for attempt in range(2)
        }
        assert rec.handled == ["o-1", "o-1"]
        what = "PoisonPolicy"
    else:
        assert statuses == {
            f"{name} #{attempt}": 200 if name == "valid" else 422 for name in UTF8_BODIES for attempt in range(2)
        }
        assert rec.handled == ["o-1", "o-1"]
        what = "PoisonPolicy"
    refusals = [
        r for r in caplog.records if r.name == "fastapi_gcp_tasks.worker" and "has no OIDCVerifier" in r.getMessage()
    ]
    assert refusals, caplog.text
    assert all(r.levelno == logging.ERROR and r.getMessage().startswith(what) for r in refusals)
    assert len({r.getMessage() for r in refusals}) == len(refusals), "the same error is logged once per route"


# ------------------------------------------------------------------------------------------------ 3. fuzz


FAILING_ORDER = "fail"
FAILING = Body(b'{"order": "fail", "cents": 1}', "application/json")
"""A valid payload whose handler raises."""


@dataclass
class FuzzTarget:
    app: FastAPI
    rec: Recorder
    key: rsa.RSAPrivateKey
    valid: str


@pytest.fixture(scope="module")
def fuzz_target(rsa_key: rsa.RSAPrivateKey) -> Iterator[FuzzTarget]:
    signer = Signer(rsa_key)
    server = JWKSServer(keys=[jwk(rsa_key, signer.kid)])
    server.start()
    rec = Recorder()
    verify = OIDCVerifier(audience=AUDIENCE, service_accounts=ACCOUNT, issuers=ISSUER, jwks_url=server.url)
    policy = PoisonPolicy(sink=rec.sink, handler_errors_after=5)
    router = APIRouter(
        route_class=poison_route_class(WorkerRoute, policy),
        dependencies=[Depends(max_retries(10, on_give_up=rec.sink)), Depends(verify)],
    )

    @router.post(PATH)
    async def charge(
        payload: Charge,
        tasks: CloudTasksHeaders = Depends(),
        scheduler: CloudSchedulerHeaders = Depends(),
    ) -> dict[str, str]:
        rec.ran(payload.order)
        if payload.order == FAILING_ORDER:
            raise RuntimeError("handler failure")
        return {"tasks": repr(tasks), "scheduler": repr(scheduler), "key": str(tasks.idempotency_key)}

    app = FastAPI()
    app.include_router(router)
    try:
        yield FuzzTarget(app, rec, rsa_key, signer.token(exp=int(time.time()) + 3 * 3600, iat=int(time.time())))
    finally:
        server.stop()


_LATIN1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)
_EDGE_VALUES = [
    "",
    " ",
    "0",
    "-1",
    "+5",
    "999",
    "1_000",
    "9" * 5000,
    "1e400",
    "-1e400",
    "nan",
    "inf",
    "-0",
    "0x10",
    "\u00b2",
    "1.5",
    "253402300800",
    "-62135596801",
    "1e18",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00-01:00",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59+01:00",
    "9999-12-31T23:59:59.999999999Z",
    "0001-01-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-01-01T00:00:00+24:00",
    "2026-01-01T00:00:00.1234567890123+00:00",
    "true",
    "TRUE",
    "True ",
    "false",
]
_OFFSETS = st.builds(
    dt.timezone,
    st.timedeltas(min_value=-dt.timedelta(hours=23, minutes=59), max_value=dt.timedelta(hours=23, minutes=59)),
)
_DATES = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone).isoformat(),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59)),
    st.none() | _OFFSETS,
)
HEADER_VALUE = st.one_of(
    st.sampled_from(_EDGE_VALUES),
    _LATIN1,
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-1e12, max_value=1e12).map(str),
    _DATES,
)
WORKER_HEADERS = [
    "X-CloudTasks-TaskRetryCount",
    "X-CloudTasks-TaskExecutionCount",
    "X-CloudTasks-TaskETA",
    "X-CloudTasks-TaskPreviousResponse",
    "X-CloudTasks-QueueName",
    "X-CloudTasks-TaskName",
    "X-CloudTasks-TaskRetryReason",
    "X-CloudScheduler",
    "X-CloudScheduler-JobName",
    "X-CloudScheduler-ScheduleTime",
]


def _json_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function: hypothesis misreads this as a lambda that ignores its argument, and warns.
    return st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20), _json_containers, max_leaves=12
)
CLAIMS = ["iss", "aud", "email", "email_verified", "iat", "exp", "nbf", "sub"]
DEEP = "[" * 10_000 + "]" * 10_000
DEEP_FITTING = "[" * 4_000 + "]" * 4_000  # under the verifier's 16 KiB token limit, deeper than the recursion limit


def _hostile_payloads() -> list[str]:
    now = int(time.time())
    base = f'"iss": "{ISSUER}", "aud": "{AUDIENCE}", "email": "{ACCOUNT}", "email_verified": true'
    return [
        DEEP,
        DEEP_FITTING,
        f'{{{base}, "iat": {now}, "exp": 1e400}}',
        f'{{{base}, "iat": 1e400, "exp": 1e400}}',
        f'{{{base}, "iat": {now}, "exp": 1e300}}',
        f'{{{base}, "iat": -1e300, "exp": 1e300}}',
        f'{{{base}, "iat": {now}, "exp": {10**400}}}',
        f'{{{base}, "iat": {now}, "exp": 1{"0" * 5000}}}',
        f'{{{base}, "iat": {now}, "exp": NaN}}',
        f'{{{base}, "iat": {now}, "exp": -Infinity}}',
        f'{{{base}, "iat": {now}, "exp": {now + 3600}, "nbf": 1e400}}',
        f'{{{base}, "iat": {now}, "exp": {DEEP_FITTING[:1000]}{DEEP_FITTING[-1000:]}}}',
        f'{{"iss": {DEEP_FITTING[:1800]}{DEEP_FITTING[-1800:]}}}',
        f'{{{base}, "iat": {now}, "exp": {now + 3600}, "email": "{ACCOUNT}\\u0000"}}',
        "[]",
        '"a string"',
        "1e400",
        "",
        "{",
    ]


KINDS = ["valid", "none", "text", "bearer text", "segments", "signed claims", "signed hostile", "valid", "valid"]
"""`valid` thrice: the header parsers and the dead letters run only once a request is authenticated."""
UNSIGNED = frozenset({"none", "text", "bearer text", "segments"})
"""Kinds of `Authorization` values that no key signed: always refused."""


@st.composite
def authorization(draw: st.DrawFn, target: FuzzTarget) -> tuple[str, str | None]:
    """An `Authorization` value: absent, random text, hostile JWT-shaped strings, or tokens signed with the key."""
    key = target.key
    kind = draw(st.sampled_from(KINDS))
    if kind == "none":
        return kind, None
    if kind == "text":
        return kind, draw(_LATIN1)
    if kind == "bearer text":
        return kind, "Bearer " + draw(_LATIN1)
    header = {"alg": "RS256", "kid": "key-1", "typ": "JWT"}
    if kind == "segments":
        first = draw(st.one_of(JSON, st.just(header)).map(json.dumps) | st.sampled_from([DEEP, DEEP_FITTING, "{"]))
        second = draw(JSON.map(json.dumps) | st.sampled_from(_hostile_payloads()))
        third = draw(st.text(st.sampled_from("ABCabc0123-_="), max_size=40))
        return kind, f"Bearer {b64url(first.encode())}.{b64url(second.encode())}.{third}"
    if kind == "signed claims":
        claims = Signer(key).claims()
        claims.update(draw(st.dictionaries(st.sampled_from(CLAIMS), JSON, max_size=4)))
        head = draw(
            st.just(header)
            | st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit"]), JSON).map(
                lambda extra: {**header, **extra}
            )
        )
        return kind, "Bearer " + sign_raw(key, json.dumps(head), json.dumps(claims))
    if kind == "signed hostile":
        return kind, "Bearer " + sign_raw(key, json.dumps(header), draw(st.sampled_from(_hostile_payloads())))
    return kind, "Bearer " + target.valid


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return "\r" not in value and "\n" not in value and "\x00" not in value


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_fuzzed_headers_and_tokens_never_answer_5xx(fuzz_target: FuzzTarget, data: st.DataObject) -> None:
    headers = data.draw(st.dictionaries(st.sampled_from(WORKER_HEADERS), HEADER_VALUE, max_size=len(WORKER_HEADERS)))
    kind, auth = data.draw(authorization(fuzz_target))
    if auth is not None:
        headers["Authorization"] = auth
    # httpx encodes str header values as ASCII; real clients send latin-1 bytes, which Starlette decodes as latin-1.
    raw = [(name.encode(), value.encode("latin-1")) for name, value in headers.items() if _latin1(value)]
    # Every body, the one that is not UTF-8 too: on a worker route even FastAPI's own 422 can quote it.
    body = data.draw(st.sampled_from([*BODIES.values(), FAILING]))
    raw.append((b"content-type", body.content_type.encode()))
    rec = fuzz_target.rec
    before = rec.snapshot()

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=fuzz_target.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            return await client.post(PATH, content=body.content, headers=raw)

    response = asyncio.run(send())
    event(f"{kind} -> {response.status_code}")  # shown by --hypothesis-show-statistics
    ran = rec.handled[before[1] :]
    # The one 500 by design: the handler raised, and the policy leaves the error to Cloud Tasks' retries
    # (a retry count under `handler_errors_after`, or no task headers).
    if ran != [FAILING_ORDER]:
        assert response.status_code < 500, (response.status_code, response.text[:500])
    if kind in UNSIGNED:
        assert response.status_code in REFUSED, (kind, response.status_code, response.text[:500])
    if response.status_code in REFUSED:
        assert rec.snapshot() == before, "a refused request acted"


def _hostile_tokens(key: rsa.RSAPrivateKey) -> dict[str, str]:
    """Every hostile JSON text, as the payload of a token the trusted key signed, and as an unsigned header."""
    header = json.dumps({"alg": "RS256", "kid": "key-1", "typ": "JWT"})
    tokens: dict[str, str] = {}
    for index, payload in enumerate(_hostile_payloads()):
        tokens[f"signed payload #{index}: {payload[:40]}"] = sign_raw(key, header, payload)
        tokens[f"header #{index}: {payload[:40]}"] = f"{b64url(payload.encode())}.{_segment(Signer(key).claims())}.AAAA"
    return tokens


def test_every_hostile_token_is_refused_with_401_or_403(fuzz_target: FuzzTarget) -> None:
    """The hostile texts of the fuzz, each sent for sure (the fuzz draws only some of them)."""
    tokens = _hostile_tokens(fuzz_target.key)
    rec = fuzz_target.rec
    before = rec.snapshot()

    async def send_all() -> dict[str, int]:
        transport = httpx.ASGITransport(app=fuzz_target.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            statuses = {}
            for name, token in tokens.items():
                response = await client.post(
                    PATH,
                    content=BODIES["json failing validation"].content,
                    headers={**spoofed(f"t-{uuid.uuid4().hex}"), "Authorization": f"Bearer {token}"},
                )
                statuses[name] = response.status_code
            return statuses

    statuses = asyncio.run(send_all())
    assert {name: status for name, status in statuses.items() if status not in REFUSED} == {}
    assert rec.snapshot() == before


def test_a_signed_token_whose_email_is_a_lone_surrogate_is_refused_with_403(fuzz_target: FuzzTarget) -> None:
    now = int(time.time())
    claims = Signer(fuzz_target.key).claims(iat=now, exp=now + 3600)
    payload = json.dumps({**claims, "email": "\ud800@proj.iam.gserviceaccount.com"})  # ensure_ascii: "\\ud800"
    token = sign_raw(fuzz_target.key, json.dumps({"alg": "RS256", "kid": "key-1", "typ": "JWT"}), payload)
    before = fuzz_target.rec.snapshot()

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=fuzz_target.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            return await client.post(
                PATH,
                json={"order": "o-1", "cents": 1},
                headers={**spoofed("t-surrogate"), "Authorization": f"Bearer {token}"},
            )

    response = asyncio.run(send())
    assert fuzz_target.rec.snapshot() == before
    assert response.status_code == 403, response.text
