"""Forward references are resolved as FastAPI resolves them; what stays undefined is a clear error."""

from __future__ import annotations

import pytest

from fastapi_gcp_tasks import RouteDefinitionError
from tests.core import _late
from tests.core._replay import replay


def test_types_defined_after_the_endpoint_are_resolved_at_first_use() -> None:
    item = _late.LaterItem(name="x", parts=[_late.Part(n=1)])
    request = _late.late.options().request(kind=_late.Kind.B, item=item, tags=("t", "u"))  # type: ignore[attr-defined]
    assert request.task.http_request.url == "http://testserver/late/b?tags=t&tags=u"
    response = replay(_late.app, request)
    assert response.status_code == 200, response.text
    assert _late.record.last == {"kind": _late.Kind.B, "item": item, "tags": ("t", "u")}


def test_scheduled_endpoints_resolve_too() -> None:
    job = _late.late_job.scheduler(name="late", schedule="0 * * * *").job(item=_late.LaterItem(name="j"))  # type: ignore[attr-defined]
    assert job.http_target.uri == "http://testserver/late-job"
    assert b'"name":"j"' in job.http_target.body


def test_a_factory_model_made_visible_at_module_level_works() -> None:
    app, local, model = _late.factory(export=True)
    request = local.options().request(item=model(value=3))
    assert replay(app, request).status_code == 200
    assert _late.record.last == {"item": model(value=3)}


def test_a_name_invisible_to_fastapi_is_an_error_naming_parameter_and_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(_late.__dict__, "Local", raising=False)
    _, local, model = _late.factory(export=False)
    with pytest.raises(RouteDefinitionError) as info:
        local.delay(item=model(value=1))
    message = str(info.value)
    assert "parameter 'item'" in message
    assert "'Local'" in message
    assert "tests.core._late" in message
