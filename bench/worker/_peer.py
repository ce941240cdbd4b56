"""Runs in bench/.venv-peer: verify one token N times with google-auth and with PyJWT; prints JSON timings."""

import json
import sys
import time

import google.auth.transport.requests
import jwt
import requests
from google.oauth2 import id_token

jwks_url, token, audience, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
results = {}

session = requests.Session()
request = google.auth.transport.requests.Request(session=session)
id_token.verify_token(token, request, audience=audience, certs_url=jwks_url)
start = time.perf_counter()
for _ in range(count):
    claims = id_token.verify_token(token, request, audience=audience, certs_url=jwks_url)
results["google-auth verify_token"] = (time.perf_counter() - start) / count

client = jwt.PyJWKClient(jwks_url, cache_keys=True)
start = time.perf_counter()
for _ in range(count):
    key = client.get_signing_key_from_jwt(token)
    jwt.decode(token, key.key, algorithms=["RS256"], audience=audience)
results["PyJWT PyJWKClient + decode"] = (time.perf_counter() - start) / count

print(json.dumps(results))
