"""Worker-side costs, side by side: OIDC verification per request and trace propagation per `.delay()`.

Besides time it counts what does not depend on the machine: fetches of the signing keys per N requests.
Run with `bench/worker/run.sh` (it creates the peers' venv); see README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from opentelemetry.sdk.trace import TracerProvider
from starlette.requests import Request

from fastapi_gcp_tasks._tracing import propagation_headers
from fastapi_gcp_tasks.oidc import OIDCVerifier

AUDIENCE = "https://worker.example.com"
ACCOUNT = "tasks@proj.iam.gserviceaccount.com"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class KeyServer:
    """Publishes one RSA key as a JWKS on loopback, like Google's certs endpoint; counts fetches."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        numbers = key.public_key().public_numbers()
        self.document = json.dumps(
            {
                "keys": [
                    {
                        "kty": "RSA",
                        "alg": "RS256",
                        "use": "sig",
                        "kid": "k1",
                        "n": b64url(numbers.n.to_bytes(256, "big")),
                        "e": b64url(numbers.e.to_bytes(3, "big")),
                    }
                ]
            }
        ).encode()
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=21600")
                self.send_header("Content-Length", str(len(owner.document)))
                self.end_headers()
                self.wfile.write(owner.document)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/oauth2/v3/certs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def make_token(key: rsa.RSAPrivateKey) -> str:
    now = int(time.time())
    header = {"alg": "RS256", "kid": "k1", "typ": "JWT"}
    claims = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "email": ACCOUNT,
        "email_verified": True,
        "sub": "1",
        "iat": now,
        "exp": now + 3600,
    }
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))}"


async def ours(verifier: OIDCVerifier, token: str, count: int) -> float:
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"authorization", f"Bearer {token}".encode())]}
    request = Request(scope)
    await verifier(request)
    start = time.perf_counter()
    for _ in range(count):
        await verifier(request)
    return (time.perf_counter() - start) / count


def per_call(function: Any, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        function()
    return (time.perf_counter() - start) / count


def peer(python: str, mode: str, server: KeyServer, token: str, count: int) -> tuple[float, int]:
    """Time a peer in its own venv; key fetches are counted after its warm-up call."""
    process = subprocess.Popen(
        [python, "bench/worker/_peer.py", mode, server.url, token, AUDIENCE, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "warm"
    before = server.hits
    process.stdin.write("go\n")
    process.stdin.flush()
    seconds = float(process.stdout.readline())
    process.wait()
    return seconds, server.hits - before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer-python", help="python of the peers' venv (bench/.venv-peer)")
    parser.add_argument("-n", type=int, default=2000, help="verifications per contender")
    args = parser.parse_args()

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = KeyServer(key)
    token = make_token(key)
    rows: list[tuple[str, str, str]] = []

    verifier = OIDCVerifier(audience=AUDIENCE, service_accounts=ACCOUNT, jwks_url=server.url)
    before = server.hits
    seconds = asyncio.run(ours(verifier, token, args.n))
    rows.append(("OIDC: fastapi_gcp_tasks OIDCVerifier", f"{seconds * 1e6:8.1f} us", f"{server.hits - before - 1}"))

    if args.peer_python:
        for mode, label in (
            ("google-auth", "google-auth id_token.verify_token"),
            ("pyjwt", "PyJWT PyJWKClient + decode"),
        ):
            seconds, fetches = peer(args.peer_python, mode, server, token, args.n)
            rows.append((f"OIDC: {label}", f"{seconds * 1e6:8.1f} us", str(fetches)))

    calls = 200_000
    rows.append(("propagation_headers(), no span", f"{per_call(propagation_headers, calls) * 1e6:8.2f} us", "-"))
    provider = TracerProvider()
    with provider.get_tracer("bench").start_as_current_span("request"):
        rows.append(
            ("propagation_headers(), in a span", f"{per_call(propagation_headers, calls // 10) * 1e6:8.2f} us", "-")
        )

    width = max(len(name) for name, _, _ in rows)
    print(f"{'contender':<{width}}  {'per call':>11}  key fetches per {args.n} verifications (after warm-up)")
    for name, timing, fetched in rows:
        print(f"{name:<{width}}  {timing:>11}  {fetched}")


if __name__ == "__main__":
    main()
