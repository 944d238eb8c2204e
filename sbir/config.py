"""``params.yaml`` → typed settings. ``params.yaml`` is the only home of every value DVC tracks: the config
dataclasses declare types, sense checks and documentation, not values.

``Params.load`` reads the file and the profiles laid over it (a benchmark's or a paper's settings: YAML files
whose keys replace params.yaml's, mapping by mapping); ``Params.read`` is the one way a typed section is read.
``build`` instantiates a dataclass, or calls any typed constructor (datasets, baselines), from a section:
every key must be a parameter, every value must fit its annotation (nested dataclasses, lists, dicts,
``X | None`` and ``Literal`` included) and pass the sense checks its annotation carries (``PositiveInt``,
``Fraction``, ...). One conversion is made on purpose: a string that spells a number is accepted for a ``float``
(YAML 1.1 reads ``1e-4`` without a dot as a string). Anything else fails naming the key, the value and what is
allowed, before a stage touches any output.
"""

from __future__ import annotations

import collections.abc
import copy as copy_module
import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union

import yaml

from sbir.errors import ConfigError, SbirError

DEFAULT_PARAMS = Path("params.yaml")
T = TypeVar("T")

__all__ = ["ConfigError", "Params", "build", "coerce", "as_params", "Check", "PositiveInt", "Count",
           "PositiveFloat", "NonNegativeFloat", "Fraction"]


@dataclasses.dataclass(frozen=True)
class Check:
    """A sense check carried by an annotation (``Annotated[int, POSITIVE]``): what is allowed, and the test."""

    allowed: str
    test: Callable[[Any], bool]


POSITIVE = Check("a value > 0", lambda value: value > 0)
NON_NEGATIVE = Check("a value >= 0", lambda value: value >= 0)
UNIT_INTERVAL = Check("a value in [0, 1]", lambda value: 0 <= value <= 1)

PositiveInt = Annotated[int, POSITIVE]  # sizes, counts that must not be zero
Count = Annotated[int, NON_NEGATIVE]  # counts that may be zero
PositiveFloat = Annotated[float, POSITIVE]  # rates, temperatures, scales
NonNegativeFloat = Annotated[float, NON_NEGATIVE]  # weights, margins, factors that may be zero
Fraction = Annotated[float, UNIT_INTERVAL]  # probabilities and shares


class _NotAllowed(ConfigError):
    """A value of the right type that fails its sense check."""


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the repository root)")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of stage sections at the top level")
    return values


def overlay(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` laid over it: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = overlay(merged[key], value)
        else:
            merged[key] = value
    return merged


class Params:
    """A params file with its profiles laid over it; every typed section is read through ``read``."""

    def __init__(self, values: dict[str, Any], source: str = str(DEFAULT_PARAMS)) -> None:
        self.values = values
        self.source = source

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PARAMS, profiles: Sequence[str | Path] = ()) -> Params:
        """``path`` (``params.yaml``) with each profile file laid over it in order."""
        values = _read_yaml(Path(path))
        for profile in profiles:
            values = overlay(values, _read_yaml(Path(profile)))
        source = " + ".join([str(path), *map(str, profiles)])
        return cls(values, source)

    def section(self, key: str) -> dict[str, Any]:
        """The mapping at a dotted ``key`` (``prepare.openmoji_zs``); an absent section is an error."""
        node: Any = self.values
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{self.source}: missing section '{'.'.join(parts[: depth + 1])}'")
            node = node[part]
        if node is None:
            return {}
        if not isinstance(node, dict):
            raise ConfigError(f"{self.source}: section '{key}' must be a mapping, got {type(node).__name__}")
        return node

    def read(self, target: type[T] | Callable[..., T], key: str) -> T:
        """The section at ``key`` built into ``target`` (a dataclass or a typed constructor), every value checked."""
        return build(target, self.section(key), f"{self.source}: {key}")

    def value(self, key: str, annotation: Any) -> Any:
        """One typed value at a dotted ``key`` (``evaluate.dataset``) of a section another stage owns."""
        parent, _, name = key.rpartition(".")
        values = self.section(parent) if parent else self.values
        if name not in values:
            raise ConfigError(f"{self.source}: missing key '{key}'")
        return coerce(values[name], annotation, f"{self.source}: {key}")

    def replaced(self, key: str, values: dict[str, Any]) -> Params:
        """A copy whose section ``key`` has its keys in ``values`` replaced (tests, sweeps, benchmarks)."""
        *parents, name = key.split(".")
        copy = copy_module.deepcopy(self.values)
        node = copy
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = {**self.section(key), **values} if name in node else dict(values)
        return Params(copy, self.source)


def _parameters(target: Any) -> dict[str, tuple[Any, bool]]:
    """Name → (annotation, required) of a dataclass's fields or a callable's keyword parameters."""
    if dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target, include_extras=True)
        return {f.name: (hints.get(f.name, Any), f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)  # type: ignore[misc]
                for f in dataclasses.fields(target) if f.init}
    # a class whose __init__ passes **params on to its parent's takes the parent's parameters too
    functions = [c.__dict__["__init__"] for c in target.__mro__ if "__init__" in c.__dict__] \
        if inspect.isclass(target) else [target]
    out: dict[str, tuple[Any, bool]] = {}
    for function in functions:
        hints = typing.get_type_hints(function, include_extras=True)
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
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is Annotated:
        base, *checks = typing.get_args(annotation)
        return " and ".join([_type_name(base), *(c.allowed for c in checks if isinstance(c, Check))])
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _fail(where: str, annotation: Any, value: Any) -> ConfigError:
    return ConfigError(f"{where}: expected {_type_name(annotation)}, got {value!r} ({type(value).__name__})")


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against (and, for nested types, converted to) ``annotation``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is object:
        return value
    if origin is Annotated:
        checked = coerce(value, args[0], where)
        for check in args[1:]:
            if isinstance(check, Check) and not check.test(checked):
                raise _NotAllowed(f"{where}: {value!r} is not allowed; expected {check.allowed}")
        return checked
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, where)
            except _NotAllowed:
                raise  # the type fits, the value makes no sense: say so rather than "expected X | None"
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
    except SbirError:
        raise  # the constructor's own error already says what is wrong (e.g. a DatasetError)
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
