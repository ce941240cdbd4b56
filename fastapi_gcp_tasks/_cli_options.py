"""The convention every command follows (docs/cli.md), in one place.

Options: a flag, or else its environment variable, or else a default.

The `emulator`, `schedules`, `relay` and `outbox` subcommands all declare their options through `env_option`,
so each one is documented the same way (`[env: NAME]` in its help) and parsed the same way: a value from the
environment goes through the option's `type` and `choices` like one typed on the command line, and a bad one
is a usage error (exit status 2), never a traceback.

Errors: one line of stderr and exit status 1 (a failure) or 2 (a usage or configuration error); `--debug`
adds the traceback. Logs: readable colored text on a terminal, JSON lines otherwise or when asked.
This module imports only the standard library: `--help` and `--version` must stay fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any

__all__ = [
    "EMULATOR_HOST_ENV",
    "FAILURE",
    "FALSE_WORDS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "OK",
    "TRUE_WORDS",
    "USAGE",
    "CommandError",
    "ConfigError",
    "JsonFormatter",
    "ProgressLine",
    "TextFormatter",
    "add_debug_option",
    "add_logging_options",
    "describe",
    "env_option",
    "env_value",
    "log_level",
    "one_line",
    "port",
    "report",
    "setup_logging",
]

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
"""What a boolean environment variable may say to mean yes (any case)."""
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
"""What a yes/no environment variable of an option that defaults to yes may say to mean no (any case)."""

EMULATOR_HOST_ENV = "FASTAPI_GCP_TASKS_EMULATOR_HOST"
"""Where clients find the emulator: the value of `transport._clients.EMULATOR_HOST_ENV` (a test keeps them equal),
repeated here because importing that module loads gRPC and Google's clients, which `--help` must not."""


def env_value(env: str) -> str | None:
    """The variable's value, or None when it is unset or empty."""
    return os.environ.get(env) or None


def env_option(parser: argparse.ArgumentParser, *flags: str, env: str, default: Any = None, **kwargs: Any) -> None:
    """Add an option named by `flags` whose default comes from the environment variable `env`, then `default`.

    `required=True` is satisfied by the variable. A `store_true` flag is on when the variable says
    1/true/yes/on. A `BooleanOptionalAction` flag (`--x` / `--no-x`) takes 1/true/yes/on or 0/false/no/off from
    the variable, anything else being a usage error naming it. A positional argument (a flag without dashes)
    becomes optional when the variable is set.
    """
    value: Any = env_value(env)
    if kwargs.get("action") is argparse.BooleanOptionalAction:
        kwargs["action"] = _yes_no_action(env)
    if value is not None and (kwargs.get("choices") is not None or kwargs.get("type") is not None):
        # argparse runs a string default through `type` but never checks it against `choices`, and its
        # error would not name the variable: do both here
        kwargs["type"] = _among(kwargs.get("type"), kwargs.get("choices"), env)
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


def _yes_no_action(env: str) -> type[argparse.Action]:
    """`BooleanOptionalAction` whose string default (the variable's value) is read as yes or no at parse time."""

    def yes_no(text: str) -> bool:
        word = text.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise argparse.ArgumentTypeError(f"not a yes/no value: {text!r} (1/true/yes/on or 0/false/no/off) [env: {env}]")

    class YesNo(argparse.BooleanOptionalAction):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # argparse runs a string default through `type`; passing `type` to the constructor is deprecated
            self.type = yes_no

    return YesNo


def _among(convert: Any, choices: Any, env: str) -> Any:
    """`convert`, then a check that the result is one of `choices`: a usage error naming `env` when either fails."""

    def checked(text: str) -> Any:
        try:
            converted = convert(text) if convert is not None else text
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} [env: {env}]") from None
        except (TypeError, ValueError):
            name = getattr(convert, "__name__", "")
            raise argparse.ArgumentTypeError(f"invalid {name} value: {text!r} [env: {env}]") from None
        if choices is not None and converted not in choices:
            allowed = ", ".join(repr(choice) for choice in choices)
            raise argparse.ArgumentTypeError(f"invalid choice: {converted!r} (choose from {allowed}) [env: {env}]")
        return converted

    checked.__name__ = getattr(convert, "__name__", "str")
    return checked


# The exit codes of every command (docs/cli.md).
OK = 0
"""Done; or, with `--exit-code`, done and nothing to change."""
FAILURE = 1
"""The command ran and failed (a service refused or could not be reached), or `--exit-code` found work to do."""
USAGE = 2
"""The command line, an environment variable or the configuration it names is wrong: fix it, then run again."""

DEBUG_ENV = "FASTAPI_GCP_TASKS_DEBUG"


class CommandError(Exception):
    """An error reported on one line of stderr, prefixed by the command, and ending it with `exit_code`."""

    exit_code = FAILURE

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(CommandError):
    """Something to fix before running again: a missing extra, missing credentials, an unmigrated database."""

    exit_code = USAGE


_MISSING_TABLE_WORDS = ("no such table", "does not exist", "doesn't exist", "undefinedtable")


@contextlib.contextmanager
def database_errors(option: str, tables: str, migrate: str) -> Iterator[None]:
    """SQLAlchemy's errors as one line: status 2 for what to fix (URL, driver, schema), 1 for the rest.

    `option` names the command's database option, `tables` what is missing when the schema is (`"outbox"`),
    and `migrate` the command that creates it.
    """
    from sqlalchemy import exc as sa

    try:
        yield
    except (sa.ArgumentError, sa.NoSuchModuleError) as exc:
        raise ConfigError(f"bad {option}: {exc}") from exc
    except ImportError as exc:
        raise ConfigError(f"the database driver of {option} is not installed: {exc}") from exc
    except sa.DBAPIError as exc:
        detail = f"{type(exc.orig).__name__}: {exc.orig}"
        if any(word in detail.lower() for word in _MISSING_TABLE_WORDS):
            raise ConfigError(f"the {tables} tables are missing ({detail}); create them with: {migrate}") from exc
        raise CommandError(f"database error: {detail}") from exc


def one_line(text: str) -> str:
    """`text` with every run of whitespace, newlines included, made one space."""
    return " ".join(text.split())


def port(text: str) -> int:
    """An argparse `type`: a TCP port number, 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {value}")
    return value


def log_level(text: str) -> str:
    """An argparse `type`: a logging level name in any case, returned upper case."""
    return text.strip().upper()


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("auto", "text", "json")


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    """`--debug` (env FASTAPI_GCP_TASKS_DEBUG): print the traceback of an error too."""
    env_option(parser, "--debug", env=DEBUG_ENV, action="store_true", help="print the traceback of an error too")


def add_logging_options(parser: argparse.ArgumentParser, env_prefix: str, *, default_level: str = "INFO") -> None:
    """`--log-level` (any case) and `--log-format` (auto: colored text on a terminal, JSON otherwise)."""
    env_option(
        parser,
        "--log-level",
        env=env_prefix + "LOG_LEVEL",
        default=default_level,
        type=log_level,
        choices=LOG_LEVELS,
        help=f"log level, any case (default {default_level})",
    )
    env_option(
        parser,
        "--log-format",
        env=env_prefix + "LOG_FORMAT",
        default="auto",
        choices=LOG_FORMATS,
        help="auto (default): readable, colored text on a terminal, JSON lines otherwise; or text, or json",
    )


def setup_logging(log_format: str, level: str) -> None:
    """Send every log record to stderr, as readable text or JSON lines (see `add_logging_options`)."""
    if log_format == "auto":
        log_format = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(color=sys.stderr.isatty()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)


_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}
_COLORS = {"DEBUG": "\033[2m", "INFO": "\033[32m", "WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[1;31m"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the record's `extra` fields, any exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`12:00:00 INFO    message key=value`, the level colored when `color`."""

    def __init__(self, *, color: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S")
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _RECORD_FIELDS)
        text = super().format(record)
        if extra:
            first, newline, rest = text.partition("\n")
            text = f"{first} {extra}{newline}{rest}"
        if self.color and record.levelname in _COLORS:
            text = text.replace(record.levelname, f"{_COLORS[record.levelname]}{record.levelname}\033[0m", 1)
        return text


class ProgressLine:
    """Shows the steps of a long operation on stderr, as the library reports them: `(done, total, message)`.

    On a terminal one line is rewritten in place and ends when the last step is done (or the operation stops);
    otherwise, in a CI log or under a process manager, each step is one line `PROG: message`, so a log shows
    how far a run got. Use it as a context manager, so that an interrupted live line is ended before an error.
    """

    def __init__(self, prog: str, stream: Any = None) -> None:
        self.prog = prog
        self.stream = sys.stderr if stream is None else stream
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._open = False

    def __call__(self, done: int, total: int, message: str) -> None:
        if self.live:
            self.stream.write(f"\r\033[K{message}")
            self._open = done < total
            if not self._open:
                self.stream.write("\n")
        else:
            self.stream.write(f"{self.prog}: {message}\n")
        self.stream.flush()

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def report(prog: str, exc: BaseException, *, debug: bool) -> int:
    """Print `exc` as one line of stderr (its traceback first with `debug`) and return the exit code it means."""
    code, message = describe(exc)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"{prog}: {one_line(message)}", file=sys.stderr)
    return code


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit code and message for an error that reached the command line.

    Only modules already imported are consulted, so describing an error never imports a heavy library.
    """
    if isinstance(exc, CommandError):
        return exc.exit_code, str(exc)
    credentials = _credentials_error(exc)
    if credentials is not None:
        return USAGE, str(exc) if credentials is not exc else f"no Google credentials: {exc}"
    exception_module = sys.modules.get("fastapi_gcp_tasks.exception")
    if exception_module is not None and isinstance(exc, exception_module.FastAPIGCPTasksError):
        return FAILURE, str(exc)
    if isinstance(exc, ImportError) and "pip install" in str(exc):
        return USAGE, str(exc)
    if isinstance(exc, OSError):
        return FAILURE, f"{type(exc).__name__}: {exc}"
    return FAILURE, f"unexpected {type(exc).__name__}: {exc} (a bug? --debug shows the traceback)"


def _credentials_error(exc: BaseException) -> BaseException | None:
    auth = sys.modules.get("google.auth.exceptions")
    if auth is None:
        return None
    wanted: type[BaseException] = auth.DefaultCredentialsError
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, wanted):
            return candidate
    return None
