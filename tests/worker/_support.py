"""Helpers for the worker tests: signed tokens like Google's, a real HTTP server publishing a JWKS, a real worker."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI
from starlette.types import ASGIApp

from tests._support import TIMEOUT, serve_asgi

ISSUER = "https://accounts.google.com"
AUDIENCE = "https://worker.example.com"
ACCOUNT = "tasks@proj.iam.gserviceaccount.com"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "alg": "RS256",
        "use": "sig",
        "kid": kid,
        "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": b64url(numbers.e.to_bytes(3, "big")),
    }


@dataclass
class Signer:
    """Makes RS256 tokens like Google's, with any claim or header changed."""

    key: rsa.RSAPrivateKey
    kid: str = "key-1"

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "azp": "1234567890",
            "sub": "1234567890",
            "email": ACCOUNT,
            "email_verified": True,
            "iat": now,
            "exp": now + 3600,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        head = {"alg": "RS256", "kid": self.kid, "typ": "JWT"} if header is None else header
        signing_input = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(self.claims(**claims)).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"


@dataclass
class JWKSServer:
    """A real HTTP server on loopback publishing `keys`; counts the fetches it serves.

    With `gate` set to an event, each fetch is answered only once the event is set (or after the suite's
    timeout); `gate_opened` says whether every fetch saw it set.
    """

    keys: list[dict[str, str]]
    cache_control: str = "public, max-age=3600"
    gate: threading.Event | None = None
    gate_opened: bool = True
    status: int = 200
    hits: int = 0
    url: str = ""
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                if owner.gate is not None and not owner.gate.wait(TIMEOUT):
                    owner.gate_opened = False
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", owner.cache_control)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/v3/certs"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def client_for(app: FastAPI) -> httpx.AsyncClient:
    """An httpx client driving `app` in-process through its real ASGI interface."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker")


@contextlib.contextmanager
def serve_app(app: ASGIApp) -> Iterator[str]:
    """Serve `app` with uvicorn on an ephemeral loopback port in a thread; yields its base URL."""
    with serve_asgi(app) as url:
        yield url
