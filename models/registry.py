"""The one registry of models, trained methods and baselines alike: registered by a decorator, built by name.

A model is one module under ``models/`` (at any depth) that registers itself under a literal name::

    @register_method("dsn")             # a Method subclass (models.method); the decorator sets its ``name``
    class DSN(Method): ...

    @register_baseline("baseline_hog")  # a typed factory (function or class) returning a RetrievalModel
    def hog_matcher(image_size: int = 64) -> RetrievalModel: ...

Modules are found by themselves: the first lookup reads the source of every module of the ``models`` package as
text and notes the names its decorator lines (at the start of a line) declare; a module is imported only when one
of its names is asked for, so asking for ``dsn`` imports no other model's module (nor open_clip), and no list of
modules is kept anywhere.
``create_model(name, params)`` builds any model from its params section (type-checked); an unknown name is a
``KeyError`` that lists the available ones.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from models.interface import RetrievalModel
from models.method import Method
from sbir.config import ConfigError, build

Kind = Literal["method", "baseline"]
KINDS: tuple[Kind, ...] = ("method", "baseline")
PACKAGE_ROOT = Path(__file__).resolve().parent
_DECORATOR = re.compile(r"^@register_(method|baseline)\b(.*)$", re.MULTILINE)
_LITERAL_NAME = re.compile(r"""\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']\s*\)""")
_REGISTERED: dict[str, tuple[Kind, Any]] = {}
T = TypeVar("T")


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join((package, *(parts[:-1] if parts[-1] == "__init__" else parts)))


def scan(root: Path = PACKAGE_ROOT, package: str = "models") -> dict[str, tuple[Kind, str]]:
    """Name → (kind, module) for every ``@register_method("name")`` / ``@register_baseline("name")`` line at the
    start of a line in the ``.py`` files under ``root`` (the package ``package``), read as text, nothing imported."""
    found: dict[str, tuple[Kind, str]] = {}
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "@register_" not in text or path.resolve() == Path(__file__).resolve():
            continue
        module = _module_name(path, root, package)
        for match in _DECORATOR.finditer(text):
            kind, rest = match.group(1), match.group(2)
            literal = _LITERAL_NAME.match(rest)
            if literal is None:
                raise ValueError(f"{path}: register under a literal name, e.g. @register_{kind}(\"my_{kind}\"); "
                                 f"got @register_{kind}{rest}")
            name = literal.group(1)
            if name in found and found[name][1] != module:
                raise ValueError(f"'{name}' is registered by two modules: {found[name][1]} and {module}")
            found[name] = (kind, module)  # type: ignore[assignment]
    return found


@cache
def _declared() -> dict[str, tuple[Kind, str]]:
    return scan()


def _register(kind: Kind, name: str) -> Callable[[T], T]:
    def decorate(target: T) -> T:
        if kind == "method":
            if not (isinstance(target, type) and issubclass(target, Method)):
                raise TypeError(f"@register_method('{name}') decorates a Method subclass, got {target!r}")
            if "name" in vars(target) and target.name != name:
                raise ValueError(f"{target.__name__}.name is '{target.name}' but it registers as '{name}'")
            target.name = name
        known = _REGISTERED.get(name)
        if known is not None and known[1] is not target:
            raise ValueError(f"{kind} '{name}' is registered twice")
        _REGISTERED[name] = (kind, target)
        return target

    return decorate


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: the ``Method`` subclass is the method ``name`` (its ``name`` attribute is set)."""
    return _register("method", name)


def register_baseline(name: str) -> Callable[[Callable[..., RetrievalModel]], Callable[..., RetrievalModel]]:
    """Decorator for a typed factory (class or function) returning a RetrievalModel: the baseline ``name``."""
    return _register("baseline", name)


def available(kind: Kind | None = None) -> list[str]:
    """Every model's name (of one kind if given), found without importing a module."""
    kinds = {name: entry[0] for name, entry in {**_declared(), **_REGISTERED}.items()}
    return sorted(name for name, of in kinds.items() if kind is None or of == kind)


class UnknownModel(ConfigError, KeyError):
    """A model name no module registers (a user's typo in params.yaml or on the command line)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _unknown(name: str, kind: Kind | None) -> UnknownModel:
    listed = "; ".join(f"{k}s: {', '.join(available(k))}" for k in (KINDS if kind is None else (kind,)))
    return UnknownModel(f"unknown {kind or 'model'} '{name}'; available {listed}")


def kind_of(name: str) -> Kind:
    """``method`` or ``baseline``, without importing the model's module; an unknown name is a KeyError."""
    entry = _REGISTERED.get(name) or _declared().get(name)
    if entry is None:
        raise _unknown(name, None)
    return entry[0]


def is_baseline(name: str) -> bool:
    """Whether ``name`` is a registered baseline (False for methods and unknown names)."""
    return name in available("baseline")


def lookup(name: str, kind: Kind | None = None) -> Any:
    """The registered ``Method`` subclass or baseline factory (its module imported on first use)."""
    if name not in _REGISTERED and name in _declared():
        module = _declared()[name][1]
        importlib.import_module(module)
        if name not in _REGISTERED:
            raise KeyError(f"{module} declares '{name}' but importing it registered no such model")
    if name not in _REGISTERED:
        raise _unknown(name, kind)
    registered_kind, target = _REGISTERED[name]
    if kind is not None and registered_kind != kind:
        raise UnknownModel(f"'{name}' is a {registered_kind}, not a {kind}; {kind}s: {', '.join(available(kind))}")
    return target


def create_model(name: str, params: dict[str, Any] | None = None, where: str | None = None,
                 kind: Kind | None = None) -> Method | RetrievalModel:
    """The model ``name`` built from its params, type-checked like every section (``where`` names them in errors):
    a method from its config (``<name>.model``), a baseline from its factory's arguments (``<name>``)."""
    target = lookup(name, kind)
    where = where or name
    if kind_of(name) == "method":
        return target(build(target.config_class, params or {}, where))
    model = build(target, params or {}, where)
    model.name = name
    return model
