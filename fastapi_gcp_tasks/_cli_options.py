"""One convention for every command-line option: a flag, or else its environment variable, or else a default.

The `emulator`, `schedules`, `relay` and `outbox` subcommands all declare their options through `env_option`,
so each one is documented the same way (`[env: NAME]` in its help) and parsed the same way: a value from the
environment goes through the option's `type` and `choices` like one typed on the command line, and a bad one
is a usage error (exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["TRUE_WORDS", "env_option", "env_value"]

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
"""What a boolean environment variable may say to mean yes (any case)."""


def env_value(env: str) -> str | None:
    """The variable's value, or None when it is unset or empty."""
    return os.environ.get(env) or None


def env_option(parser: argparse.ArgumentParser, *flags: str, env: str, default: Any = None, **kwargs: Any) -> None:
    """Add an option named by `flags` whose default comes from the environment variable `env`, then `default`.

    `required=True` is satisfied by the variable. A `store_true` flag is on when the variable says
    1/true/yes/on. A positional argument (a flag without dashes) becomes optional when the variable is set.
    """
    value: Any = env_value(env)
    if value is not None and kwargs.get("choices") is not None:
        # argparse runs a string default through `type` but never checks it against `choices`: do it here
        kwargs["type"] = _among(kwargs.get("type"), kwargs["choices"], env)
    if value is None:
        value = default
    if kwargs.get("action") == "store_true":
        value = str(value).strip().lower() in TRUE_WORDS if isinstance(value, str) else bool(value)
    help_text = f"{kwargs.pop('help', '')} [env: {env}]".strip()
    if flags[0].startswith("-"):
        required = kwargs.pop("required", False) and value is None
        parser.add_argument(*flags, default=value, required=required, help=help_text, **kwargs)
    else:
        parser.add_argument(*flags, nargs=None if value is None else "?", default=value, help=help_text, **kwargs)


def _among(convert: Any, choices: Any, env: str) -> Any:
    """`convert`, then a check that the result is one of `choices` (a usage error naming `env` when not)."""

    def checked(text: str) -> Any:
        converted = convert(text) if convert is not None else text
        if converted not in choices:
            allowed = ", ".join(repr(choice) for choice in choices)
            raise argparse.ArgumentTypeError(f"invalid choice: {converted!r} (choose from {allowed}) [env: {env}]")
        return converted

    checked.__name__ = getattr(convert, "__name__", "str")
    return checked
