"""YAML configs onto frozen dataclasses: strict keys with "did you mean", dotted ``--set`` overrides.

Each part of cvkit defines the dataclass of its own section (``cvkit.data`` its data section, the anchor
generator its anchor section, ...); this module only maps plain YAML onto them:

    cfg = load_config("configs/default.yaml", RootConfig, overrides=["data.batch_size=8"])

Rules: every key must be a field of the target dataclass (unknown keys raise :class:`ConfigError` naming
the key path and the closest valid names); missing keys take the dataclass default; nested dataclasses,
lists/tuples and Optional fields are converted recursively; values are type-checked loosely (ints are
accepted for floats, lists for tuples). YAML is read with ``yaml.safe_load`` only. An error names where the
bad value came from: the file, or the ``--set`` override that set it (:func:`located`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "ConfigError",
    "from_dict",
    "to_dict",
    "load_yaml",
    "apply_overrides",
    "load_config",
    "check_choice",
    "located",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit its dataclass; the message names the key path.

    ``keys``: the dotted key paths the error is about (``("train.lr",)``; empty when it is about no key), so
    that :func:`located` can name the ``--set`` override that set one of them rather than the YAML file.
    ``kind`` (``config``, or ``missing_file`` for a config file that does not exist) and ``hint`` (how to fix
    it, or ``None``) are what the command line prints with it.
    """

    kind = "config"

    def __init__(self, message: str, *keys: str, kind: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.keys = tuple(keys)
        self.hint = hint
        if kind is not None:
            self.kind = kind


def _override_key(item: str) -> str:
    """The dotted key of an override ``a.b.c=value`` (``""`` when it has none)."""
    return ".".join(p for p in item.split("=", 1)[0].strip().split(".") if p)


def _sets(override_key: str, key: str) -> bool:
    """Whether an override of ``override_key`` sets ``key``, a section holding it, or a key inside it."""
    return (
        key == override_key
        or key.startswith((f"{override_key}.", f"{override_key}["))
        or override_key.startswith(f"{key}.")
    )


def located(exc: ConfigError, source: str | Path, overrides: Iterable[str] = ()) -> ConfigError:
    """``exc`` with its origin in front: ``--set ITEM`` when an override set one of ``exc.keys`` (the last
    such override: it is the one that took effect), else ``source`` (the YAML file, the checkpoint, ...)."""
    culprit = None
    for item in overrides:
        if any(_sets(_override_key(item), key) for key in exc.keys):
            culprit = item
    message = str(exc)
    if culprit is None:
        where = str(source)
    else:
        where = f"--set {culprit}"
        message = message.removeprefix(f"{_override_key(culprit)}: ")  # the override already names the key
    return ConfigError(f"{where}: {message}", *exc.keys, kind=exc.kind, hint=exc.hint)


def check_choice(value: str, choices: Iterable[str], key: str) -> None:
    """Raise :class:`ConfigError` for ``key`` unless ``value`` is one of ``choices`` (with a "did you mean")."""
    names = sorted(choices)
    if value not in names:
        raise ConfigError(
            f"{key}: unknown name {value!r}{_suggest(str(value), names)} (valid: {', '.join(names)})", key
        )


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}{_suggest(str(value), map(str, args))}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} ({value!r})")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin in (dict,) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys with a suggestion."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key {path!r}{_suggest(str(key), fields)}", path)
        try:
            kwargs[key] = _convert(value, hints[key], path)
        except ConfigError as exc:
            if not exc.keys:  # the innermost field path (a nested from_dict has set its own)
                exc.keys = (path,)
            raise
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where or 'config'}: {exc}", *((where,) if where else ())) from None


def to_dict(obj: Any) -> Any:
    """The plain (YAML-able) form of a config dataclass: tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", kind="missing_file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, returning a new dict.

    Errors name the override as the command line spells it: ``--set ITEM: what is wrong``.
    """
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: an override must look like key.path=value")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item}: the key is empty (an override looks like key.path=value)")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"--set {item}: the value is not valid YAML ({problem})") from None
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                section = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {item}: {section!r} is a value, not a section", section)
            node = child
        node[parts[-1]] = value
    return out


def load_config(path: str | Path, cls: type[T], overrides: Iterable[str] = ()) -> T:
    """Load a YAML file onto dataclass ``cls`` after applying dotted overrides (errors name the file, or the
    override that set the bad value)."""
    overrides = list(overrides)
    data = apply_overrides(load_yaml(path), overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise located(exc, path, overrides) from None
