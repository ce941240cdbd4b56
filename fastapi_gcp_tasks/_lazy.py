"""Public names imported on first use (PEP 562), for packages whose `--help` or import must stay cheap."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, where: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level `__getattr__` and `__dir__` of `package`, whose public name N lives in module `where[N]`.

    A name is imported when first read and then cached in the package's namespace, so later reads cost nothing.
    Use: `__getattr__, __dir__ = lazy_exports(__name__, _LAZY)`.
    """
    namespace = vars(sys.modules[package])

    def get_attribute(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def list_names() -> list[str]:
        return sorted({*namespace, *where})

    return get_attribute, list_names
