"""``params.yaml`` → typed settings. One section per stage; unknown keys are errors, not silently ignored."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

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


def build(cls: type[T], values: dict[str, Any], where: str) -> T:
    """Instantiate a dataclass from a section, naming unknown or missing keys."""
    fields = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    try:
        return cls(**values)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from error
