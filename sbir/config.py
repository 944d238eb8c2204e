"""``params.yaml`` → typed settings. One section per stage; unknown keys are errors, values are type-checked.

``build`` instantiates a dataclass, or calls any typed constructor (datasets, baselines), from a section:
every key must be a parameter, every value must fit its annotation (nested dataclasses, lists, dicts,
``X | None`` and ``Literal`` included). One conversion is made on purpose: a string that spells a number is
accepted for a ``float`` (YAML 1.1 reads ``1e-4`` without a dot as a string). Anything else that does not
fit fails naming the key, the expected type and the value found.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

DEFAULT_PARAMS = Path("params.yaml")
T = TypeVar("T")


class ConfigError(ValueError):
    """A params file or section that does not fit what the stage expects."""


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """The whole params file as a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the repository root)")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping of stage sections at the top level")
    return params


def section(params: dict[str, Any], *keys: str, source: str = "params.yaml") -> dict[str, Any]:
    """A nested section, e.g. ``section(p, "prepare", "openmoji_zs")``; an absent section is an error."""
    node: Any = params
    for depth, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"{source}: missing section '{'.'.join(keys[: depth + 1])}'")
        node = node[key]
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise ConfigError(f"{source}: section '{'.'.join(keys)}' must be a mapping, got {type(node).__name__}")
    return node


def _parameters(target: Any) -> dict[str, tuple[Any, bool]]:
    """Name → (annotation, required) of a dataclass's fields or a callable's keyword parameters."""
    if dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target)
        return {f.name: (hints.get(f.name, Any), f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)  # type: ignore[misc]
                for f in dataclasses.fields(target) if f.init}
    # a class whose __init__ passes **params on to its parent's takes the parent's parameters too
    functions = [c.__dict__["__init__"] for c in target.__mro__ if "__init__" in c.__dict__] \
        if inspect.isclass(target) else [target]
    out: dict[str, tuple[Any, bool]] = {}
    for function in functions:
        hints = typing.get_type_hints(function)
        forwards = False
        for name, parameter in inspect.signature(function).parameters.items():
            if parameter.kind == parameter.VAR_KEYWORD:
                forwards = True
            elif name != "self" and parameter.kind != parameter.VAR_POSITIONAL and name not in out:
                out[name] = (hints.get(name, Any), parameter.default is inspect.Parameter.empty)
        if not forwards:
            break
    return out


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _fail(where: str, annotation: Any, value: Any) -> ConfigError:
    return ConfigError(f"{where}: expected {_type_name(annotation)}, got {value!r} ({type(value).__name__})")


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against (and, for nested types, converted to) ``annotation``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is object:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, where)
            except ConfigError:
                continue
        raise _fail(where, annotation, value)
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise _fail(where, annotation, value)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if args and len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
        item = args[0] if args else Any
        items = [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise _fail(where, annotation, value)
        key_type, value_type = args or (Any, Any)
        return {coerce(k, key_type, where): coerce(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise _fail(where, annotation, value)
        return build(annotation, value, where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _fail(where, annotation, value)
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(where, annotation, value)
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # on purpose: YAML 1.1 reads 1e-4 (no dot) as a string
            except ValueError:
                pass
        raise _fail(where, annotation, value)
    if annotation is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _fail(where, annotation, value)
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise _fail(where, annotation, value)
    return value


def build(target: type[T] | Any, values: dict[str, Any] | None, where: str) -> T:
    """Instantiate a dataclass (or call a typed constructor) from a section, checking every key and value."""
    values = values or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    parameters = _parameters(target)
    unknown = sorted(set(values) - set(parameters))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(parameters)}")
    missing = sorted(name for name, (_, required) in parameters.items() if required and name not in values)
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}")
    checked = {key: coerce(value, parameters[key][0], f"{where}.{key}") for key, value in values.items()}
    try:
        return target(**checked)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from error


def as_params(instance: Any) -> dict[str, Any]:
    """A dataclass as plain YAML-able values (tuples become lists, paths strings): what params.yaml holds."""
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(dataclasses.asdict(instance))
