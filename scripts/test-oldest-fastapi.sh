#!/usr/bin/env bash
# Route building and the round trip on the oldest FastAPI we support (newer releases stop copying routes
# on include_router; older ones copy them, which the route classes must recognise).
set -euo pipefail
cd "$(dirname "$0")/.."
OLDEST_FASTAPI="${OLDEST_FASTAPI:-0.115.0}"
VENV=.venv-fastapi-oldest
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check uv
fi
"$VENV/bin/uv" pip install --python "$VENV/bin/python" --quiet -e '.[emulator,outbox,postgres,mysql]' "fastapi==$OLDEST_FASTAPI" \
    pytest pytest-asyncio pytest-timeout hypothesis httpx python-multipart cryptography uvicorn \
    greenlet aiosqlite asyncpg asyncmy
"$VENV/bin/python" -c "import fastapi; print('FastAPI', fastapi.__version__)"
# The plugin stays on (its ini option is then known under --strict-config): the examples' app checks run here too.
"$VENV/bin/python" -m pytest -q -W ignore::PendingDeprecationWarning -W ignore::DeprecationWarning -W ignore::pydantic.warnings.UnsupportedFieldAttributeWarning tests/core/test_roundtrip.py tests/core/test_routes.py tests/core/test_refusals.py tests/core/test_reach.py tests/core/test_forward_refs.py tests/core/test_exactly_or_refused.py tests/core/test_typing_runtime.py tests/outbox/test_outbox_session.py tests/outbox/test_outbox_misuse.py tests/outbox/test_outbox_writer.py tests/worker/test_headers.py tests/worker/test_max_retries.py tests/worker/test_poison.py tests/worker/test_oidc.py tests/worker/test_auth.py tests/worker/test_attacks.py
