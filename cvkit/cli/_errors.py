"""What a user sees when a command fails: one line for an expected failure, a traceback only for a bug.

Every command's ``main(argv)`` is wrapped by :func:`cli_errors` (``@cli_errors("cvkit train")``), so
``cvkit COMMAND`` and ``tools/*.py`` (which call the modules' ``main`` directly) behave the same. An
*expected* failure is one of :func:`expected_types`: bad input the user can fix.

- :class:`cvkit.data.DataError` (a dataset file or entry), :class:`cvkit.config.ConfigError` (a config key
  or value, a ``--set`` override, an unknown backbone name), :class:`cvkit.checkpoint.CheckpointError`
  (a checkpoint that is missing, unreadable, unsafe or not cvkit's), :class:`CliError` (a command's own
  checks: bad option combinations, nothing to process);
- ``FileNotFoundError``, ``NotADirectoryError``, ``IsADirectoryError``, ``PermissionError`` (a path given
  on the command line or in the config).

Such a failure prints, on stderr::

    cvkit COMMAND: WHAT IS WRONG, NAMING THE FILE / ENTRY / OVERRIDE [kind]
      fix: HOW TO FIX IT                 (only where there is something useful to say)

and the command exits with status :data:`EXIT_EXPECTED` (2). ``kind`` is the error's ``kind`` (the
:data:`cvkit.data.ERROR_KINDS` vocabulary for data, ``config``, ``unsafe_checkpoint``, ...). Anything else
is a bug and keeps its traceback; ``CVKIT_DEBUG=1`` re-raises expected failures too, for their traceback.

A ``DataError`` raised inside a DataLoader worker reaches the main process as torch's ``RuntimeError("Caught
DataError in DataLoader worker process N. Original Traceback ...")``; it is recognized and shown as the
``DataError`` it was.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from typing import TypeVar

__all__ = ["CliError", "EXIT_EXPECTED", "cli_errors", "describe", "expected_types", "format_error"]

#: Exit status of an expected failure (argparse uses the same for a bad command line).
EXIT_EXPECTED = 2

Main = TypeVar("Main", bound=Callable[..., int])


class CliError(Exception):
    """An expected failure a command finds itself (a bad combination of options, no input could be read)."""

    def __init__(self, message: str, kind: str = "usage", hint: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.hint = hint


_OS_KINDS: dict[type[OSError], str] = {
    FileNotFoundError: "missing_file",
    NotADirectoryError: "not_a_folder",
    IsADirectoryError: "is_a_folder",
    PermissionError: "permission_denied",
}

#: cvkit's expected error types, by the module that defines them. They are looked up only in modules
#: already imported: an error of a module never imported cannot have been raised, and importing
#: ``cvkit.checkpoint`` here would pull torch into ``cvkit doctor``.
_CVKIT_TYPES = (
    ("cvkit.data.errors", "DataError"),
    ("cvkit.config", "ConfigError"),
    ("cvkit.checkpoint", "CheckpointError"),
)

_HINT_SKIP = (
    "fix or remove it, or --set data.on_error=skip to drop and count bad items "
    "(`cvkit check-data --config CONFIG` lists them all)"
)

_WORKER = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.")
#: the kind of an expected error re-raised from a DataLoader worker, when its message does not end in one
_WORKER_KINDS = {
    "DataError": "data",
    "ConfigError": "config",
    "CheckpointError": "unreadable_checkpoint",
    **{t.__name__: kind for t, kind in _OS_KINDS.items()},
}


def expected_types() -> tuple[type[BaseException], ...]:
    """The exception types that are a user's to fix (module docstring), among the modules imported."""
    found: list[type[BaseException]] = [CliError, *_OS_KINDS]
    for module, name in _CVKIT_TYPES:
        loaded = sys.modules.get(module)
        if loaded is not None:
            found.append(getattr(loaded, name))
    return tuple(found)


def _from_worker(exc: BaseException) -> tuple[str, str] | None:
    """``(message, type name)`` of an expected error that a DataLoader re-raised from a worker, else None.

    torch re-raises it as ``RuntimeError`` (or its own type) whose text is ``Caught NAME in DataLoader worker
    process N.`` followed by the worker's traceback; its last line is ``module.NAME: MESSAGE``.
    """
    text = str(exc)
    caught = _WORKER.match(text)
    if caught is None or caught.group(1) not in _WORKER_KINDS:
        return None
    name = caught.group(1)
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    return re.sub(rf"^(?:[\w.]+\.)?{name}: ", "", last), name


def is_expected(exc: BaseException) -> bool:
    return isinstance(exc, expected_types()) or _from_worker(exc) is not None


def describe(exc: BaseException) -> tuple[str, str, str | None]:
    """``(message, kind, hint)`` of an expected failure; the message is one line."""
    worker = _from_worker(exc)
    if worker is not None:
        message, name = worker
        found = re.search(r"\[(\w+)\]$", message)
        kind = found.group(1) if found else _WORKER_KINDS[name]
        return message, kind, _HINT_SKIP if name == "DataError" else None  # decoding errors: skip drops them
    if isinstance(exc, tuple(_OS_KINDS)):
        assert isinstance(exc, OSError)
        kind = next(k for t, k in _OS_KINDS.items() if isinstance(exc, t))
        message = f"{exc.filename}: {exc.strerror}" if exc.filename is not None and exc.strerror else str(exc)
        return _one_line(message), kind, None
    kind = str(getattr(exc, "kind", None) or "error")
    hint = getattr(exc, "hint", None)
    if hint is None and getattr(exc, "skippable", False):
        hint = _HINT_SKIP
    return _one_line(str(exc)), kind, _one_line(hint) if hint else None


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def format_error(command: str, exc: BaseException) -> str:
    """``COMMAND: MESSAGE [kind]`` plus, when there is one, a second line ``  fix: HINT``."""
    message, kind, hint = describe(exc)
    line = f"{command}: {message}"
    if not message.endswith(f"[{kind}]"):  # a DataError's message ends with its kind already
        line += f" [{kind}]"
    return line + (f"\n  fix: {hint}" if hint else "")


def debug() -> bool:
    """``CVKIT_DEBUG=1`` (or any value but ``0`` / empty): expected failures keep their traceback."""
    return os.environ.get("CVKIT_DEBUG", "") not in ("", "0")


def cli_errors(command: str) -> Callable[[Main], Main]:
    """Decorate a command's ``main(argv) -> int``: an expected failure prints :func:`format_error` on stderr
    and returns :data:`EXIT_EXPECTED`; any other exception (a bug) propagates with its traceback."""

    def wrap(main: Main) -> Main:
        @functools.wraps(main)
        def run(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except Exception as exc:
                if debug() or not is_expected(exc):
                    raise
                sys.stdout.flush()  # what the command printed so far comes first
                print(format_error(command, exc), file=sys.stderr, flush=True)
                return EXIT_EXPECTED

        return run  # type: ignore[return-value]

    return wrap
