"""Authentication first: the gate every worker piece passes, whatever the order of the user's dependencies."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, UploadFile
from fastapi.routing import APIRoute
from pydantic import BaseModel

from fastapi_gcp_tasks.exception import WorkerConfigError
from fastapi_gcp_tasks.oidc import OIDCClaims, OIDCVerifier
from fastapi_gcp_tasks.poison import DeadLetter, PoisonPolicy, poison_route_class
from fastapi_gcp_tasks.receive import PrivateEndpoint, WorkerRoute, max_retries
from fastapi_gcp_tasks.receive._headers import safe_headers
from fastapi_gcp_tasks.receive._letters import LetterLedger

from ._support import ACCOUNT, AUDIENCE, JWKSServer, Signer, client_for

TASK = {"X-CloudTasks-TaskName": "t-1", "X-CloudTasks-QueueName": "q", "X-CloudTasks-TaskRetryCount": "9"}


class Item(BaseModel):
    n: int


class CountingVerifier(OIDCVerifier):
    """An `OIDCVerifier` that counts the verifications it really performs."""

    checks = 0

    async def check(self, request: Any) -> OIDCClaims:
        type(self).checks += 1
        return await super().check(request)


@pytest.fixture
def verifier(jwks_server: JWKSServer) -> CountingVerifier:
    CountingVerifier.checks = 0
    return CountingVerifier(audience=AUDIENCE, service_accounts=ACCOUNT, jwks_url=jwks_server.url)


async def test_one_verification_per_request_wherever_the_verifier_is_declared(
    verifier: CountingVerifier, signer: Signer
) -> None:
    letters: list[DeadLetter] = []
    router = APIRouter(route_class=WorkerRoute, dependencies=[Depends(max_retries(3, on_give_up=letters.append))])

    @router.post("/work", dependencies=[Depends(verifier)])
    async def work(item: Item, claims: OIDCClaims = Depends(verifier)) -> dict[str, str]:
        return {"by": claims.email}

    app = FastAPI()
    app.include_router(router, dependencies=[Depends(verifier)])
    async with client_for(app) as client:
        token = {"Authorization": f"Bearer {signer.token()}"}
        ran = await client.post("/work", json={"n": 1}, headers={**token, "X-CloudTasks-TaskRetryCount": "0"})
        given_up = await client.post("/work", json={"n": 1}, headers={**token, **TASK})
        refused = await client.post("/work", content=b"{broken", headers=TASK)
    assert ran.json() == {"by": ACCOUNT}
    assert given_up.status_code == 200
    assert "gave up" in given_up.json()["detail"]
    assert refused.status_code == 401
    assert [letter.reason for letter in letters] == ["max_retries"]
    assert CountingVerifier.checks == 3  # one per request, although declared four times and run early


async def test_include_router_dependencies_are_found_before_the_body_is_read(
    verifier: CountingVerifier, signer: Signer
) -> None:
    letters: list[DeadLetter] = []
    router = APIRouter(route_class=poison_route_class(APIRoute, PoisonPolicy(sink=letters.append)))

    @router.post("/work")
    async def work(item: Item) -> None: ...

    app = FastAPI()
    app.include_router(router, prefix="/v1", dependencies=[Depends(verifier)])
    async with client_for(app) as client:
        anonymous = await client.post("/v1/work", content=b"{broken", headers=TASK)
        valid = await client.post(
            "/v1/work", content=b"{broken", headers={**TASK, "Authorization": f"Bearer {signer.token()}"}
        )
    assert anonymous.status_code == 401
    assert valid.status_code == 200
    assert [letter.body for letter in letters] == [b"{broken"]


async def test_an_overridden_verifier_is_left_to_its_override(verifier: CountingVerifier) -> None:
    letters: list[DeadLetter] = []
    app = FastAPI(dependencies=[Depends(verifier)])

    @app.post("/work", dependencies=[Depends(max_retries(1, on_give_up=letters.append))])
    async def work() -> None: ...

    app.dependency_overrides[verifier] = lambda: None
    async with client_for(app) as client:
        response = await client.post("/work", headers=TASK)
    assert response.status_code == 200
    assert "gave up" in response.json()["detail"]
    assert len(letters) == 1
    assert CountingVerifier.checks == 0


async def test_without_an_authenticator_nothing_acts_and_an_error_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    letters: list[DeadLetter] = []
    runs: list[int] = []
    router = APIRouter(route_class=poison_route_class(APIRoute, PoisonPolicy(sink=letters.append)))

    @router.post("/work", dependencies=[Depends(max_retries(1, on_give_up=letters.append))])
    async def work(item: Item) -> None:
        runs.append(item.n)

    app = FastAPI()
    app.include_router(router)
    with caplog.at_level(logging.ERROR, logger="fastapi_gcp_tasks.worker"):
        async with client_for(app) as client:
            invalid = [(await client.post("/work", content=b"{broken", headers=TASK)).status_code for _ in range(2)]
            valid = await client.post("/work", json={"n": 5}, headers=TASK)
    assert invalid == [422, 422]
    assert valid.status_code == 200
    assert runs == [5]
    assert letters == []
    refusals = [r.getMessage() for r in caplog.records if "does nothing" in r.getMessage()]
    assert len(refusals) == 2, refusals  # once for the policy, once for max_retries
    assert any(message.startswith("PoisonPolicy on POST /work") for message in refusals)


async def test_a_private_endpoint_lets_the_pieces_act_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    letters: list[DeadLetter] = []
    private = PrivateEndpoint("Cloud Run IAM")
    app = FastAPI(dependencies=[Depends(private)])

    @app.post("/work", dependencies=[Depends(max_retries(1, on_give_up=letters.append))])
    async def work() -> None: ...

    with caplog.at_level(logging.WARNING, logger="fastapi_gcp_tasks.worker"):
        async with client_for(app) as client:
            for task in ("a", "b"):
                await client.post("/work", headers={**TASK, "X-CloudTasks-TaskName": task})
    assert [letter.task_name for letter in letters] == ["a", "b"]
    warnings = [r.getMessage() for r in caplog.records if "trusts every caller" in r.getMessage()]
    assert warnings == ["POST /work trusts every caller that reaches it: declared private (Cloud Run IAM)"]


@pytest.mark.parametrize("reason", ["", "   ", None, 3])
def test_a_private_endpoint_must_say_why(reason: Any) -> None:
    with pytest.raises(WorkerConfigError) as caught:
        PrivateEndpoint(reason)
    assert caught.value.param == "reason"


def test_credentials_are_redacted_from_letters() -> None:
    headers = {
        "Authorization": "Bearer a",
        "X-Forwarded-Authorization": "Bearer b",
        "X-Serverless-Authorization": "Bearer c",
        "X-Goog-IAP-JWT-Assertion": "jwt",
        "Cookie": "session=1",
        "X-Hub-Signature-256": "sha256=...",
        "X-Api-Key": "k",
        "X-CloudTasks-TaskName": "t-1",
        "Content-Type": "application/json",
    }
    kept = safe_headers(headers)
    assert kept["x-cloudtasks-taskname"] == "t-1"
    assert kept["content-type"] == "application/json"
    secret_names = set(kept) - {"x-cloudtasks-taskname", "content-type"}
    assert len(secret_names) == 7
    assert all(kept[name] == "[redacted]" for name in secret_names)


def letter(task: str | None) -> DeadLetter:
    headers = {} if task is None else {"x-cloudtasks-taskname": task, "x-cloudtasks-queuename": "q"}
    return DeadLetter(reason="max_retries", method="POST", path="/", body=b"", headers=headers)


async def test_the_ledger_writes_one_letter_per_task_even_while_a_write_is_in_flight() -> None:
    written: list[str | None] = []
    release = asyncio.Event()

    async def slow_sink(item: DeadLetter) -> None:
        await release.wait()
        written.append(item.key)

    ledger = LetterLedger()
    first = asyncio.create_task(ledger.deliver(slow_sink, letter("t-1")))
    second = asyncio.create_task(ledger.deliver(slow_sink, letter("t-1")))
    other = asyncio.create_task(ledger.deliver(slow_sink, letter("t-2")))
    await asyncio.sleep(0)
    release.set()
    assert list(await asyncio.gather(first, second, other)) == [True, False, True]
    assert sorted(written, key=str) == ["q/t-1", "q/t-2"]
    assert await ledger.deliver(slow_sink, letter("t-1")) is False
    assert await ledger.deliver(slow_sink, letter(None)) is True  # no task: nothing to deduplicate on


async def test_the_ledger_writes_again_after_a_failed_write() -> None:
    calls: list[str | None] = []

    def flaky_sink(item: DeadLetter) -> None:
        calls.append(item.key)
        if len(calls) == 1:
            raise OSError("store down")

    ledger = LetterLedger()
    with pytest.raises(OSError, match="store down"):
        await ledger.deliver(flaky_sink, letter("t-1"))
    assert await ledger.deliver(flaky_sink, letter("t-1")) is True
    assert calls == ["q/t-1", "q/t-1"]


async def test_a_parsed_form_is_written_out_again_on_a_plain_route() -> None:
    letters: list[DeadLetter] = []
    app = FastAPI(dependencies=[Depends(PrivateEndpoint("tests"))])

    @app.post("/form", dependencies=[Depends(max_retries(1, on_give_up=letters.append))])
    async def form(name: str = Form(), tags: list[str] = Form()) -> None:
        raise HTTPException(500)

    @app.post("/upload", dependencies=[Depends(max_retries(1, on_give_up=letters.append))])
    async def upload(file: UploadFile, note: str = Form()) -> None:
        raise HTTPException(500)

    async with client_for(app) as client:
        await client.post("/form", data={"name": "a b&c", "tags": ["x", "y"]}, headers=TASK)
        await client.post(
            "/upload", data={"note": "hi"}, files={"file": ("a.bin", b"\x00\x01", "application/x-raw")}, headers=TASK
        )
    urlencoded, multipart = letters
    assert urlencoded.body == b"name=a+b%26c&tags=x&tags=y"
    assert urlencoded.headers["content-type"] == "application/x-www-form-urlencoded"

    # The rewritten multipart body parses back to the same form.
    echo = FastAPI()

    @echo.post("/echo")
    async def parse(file: UploadFile, note: str = Form()) -> dict[str, Any]:
        return {"note": note, "name": file.filename, "type": file.content_type, "data": list(await file.read())}

    async with client_for(echo) as client:
        parsed = await client.post(
            "/echo", content=multipart.body, headers={"Content-Type": multipart.headers["content-type"]}
        )
    assert parsed.json() == {"note": "hi", "name": "a.bin", "type": "application/x-raw", "data": [0, 1]}


async def test_a_binary_body_gets_a_422_not_a_500_on_a_worker_route() -> None:
    router = APIRouter(route_class=WorkerRoute)

    @router.post("/work")
    async def work(item: Item) -> None: ...

    app = FastAPI()
    app.include_router(router)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        response = await client.post("/work", content=b"\xff\xfe\x00", headers={"Content-Type": "text/plain"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["input"] == "\\xff\\xfe\x00"  # what is UTF-8 stays as it is


async def test_a_failing_give_up_sink_answers_500_even_under_a_poison_policy_for_handler_errors() -> None:
    letters: list[DeadLetter] = []

    def broken_sink(letter: DeadLetter) -> None:
        raise OSError("the dead-letter store is down")

    router = APIRouter(
        route_class=poison_route_class(APIRoute, PoisonPolicy(sink=letters.append, handler_errors_after=0)),
        dependencies=[Depends(PrivateEndpoint("tests")), Depends(max_retries(3, on_give_up=broken_sink))],
    )

    @router.post("/work")
    async def work() -> None: ...

    app = FastAPI()
    app.include_router(router)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        response = await client.post("/work", headers=TASK)
    assert response.status_code == 500  # delivered again later: the give-up was not recorded
    assert letters == []  # and not mistaken for the handler failing
