"""Runs in bench/.venv-peer: verify one token N times with google-auth or PyJWT; prints seconds per call."""

import sys
import time

import google.auth.transport.requests
import jwt
import requests
from google.oauth2 import id_token

mode, jwks_url, token, audience, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

if mode == "google-auth":
    request = google.auth.transport.requests.Request(session=requests.Session())

    def verify() -> None:
        id_token.verify_token(token, request, audience=audience, certs_url=jwks_url)

else:
    client = jwt.PyJWKClient(jwks_url, cache_keys=True)

    def verify() -> None:
        key = client.get_signing_key_from_jwt(token)
        jwt.decode(token, key.key, algorithms=["RS256"], audience=audience)


verify()
print("warm", flush=True)
sys.stdin.readline()
start = time.perf_counter()
for _ in range(count):
    verify()
print((time.perf_counter() - start) / count, flush=True)
