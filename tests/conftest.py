"""Shared test settings: hypothesis profiles, and leaked resources charged to the test that leaked them."""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


LEAK_WARNINGS = (ResourceWarning, RuntimeWarning)
"""What a finalizer warns about: an unclosed socket, file or loop; a coroutine never awaited."""


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what imports and collection made out of the collector's reach: it lives for the whole run anyway."""
    gc.collect()
    gc.freeze()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Fail the test that leaked a socket, file or event loop (or left a coroutine never awaited), naming it.

    An unclosed resource warns when it is collected; caught in a reference cycle, that happens at some later
    garbage collection, under `filterwarnings = error` in whichever test is running then. Collecting here, once
    the test's fixtures are torn down, charges the leak to the test that made it; after the last test of a
    module, to that test, for its module's fixtures.

    Cheap because what was alive after the previous test is frozen (`gc.freeze`), so a collection walks only
    what this test made; the whole heap (about 0.1 s to walk here, mostly protobuf and gRPC modules) is walked
    once per module, when its fixtures are gone.
    """
    yield
    if nextitem is None or nextitem.path != item.path:
        gc.unfreeze()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    gc.freeze()
    leaks = sorted(
        {
            f"{warning.category.__name__}: {warning.message}"
            for warning in caught
            if issubclass(warning.category, LEAK_WARNINGS)  # not what another thread warned meanwhile
        }
    )
    if leaks:
        pytest.fail(f"{item.nodeid} left unclosed: " + "; ".join(leaks), pytrace=False)
