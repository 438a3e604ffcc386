"""One configuration file per service, with environment overrides (which Helm values set).

A config file is YAML. `UCADI_<SECTION>__<KEY>=value` overrides `section.key` (double underscore
between levels; values parsed as YAML scalars, so `3`, `true`, `0.5` keep their types).
Unknown settings are refused, except inside a mapping whose default is empty (free-form, such
as the training-recipe overrides).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ucadi.errors import CommandError

ENV_PREFIX = "UCADI_"
DEFAULT_SOURCE = "default"


class ConfigError(CommandError):
    """A configuration file or override is malformed, names an unknown setting or gives a
    value of the wrong type (a usage error: exit code 2)."""


# The type each default's value stands for, as a person reads it in an error message.
_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number",
               str: "a string", list: "a list", dict: "a mapping"}


def _typed(default: Any, value: Any, name: str, origin: str) -> Any:
    """`value` if it has the default's type (a number where a number is expected, a whole
    number for a float, a number's text for a string), else a one-line ConfigError naming the
    setting, the value, where it came from and the type expected. None leaves a setting unset;
    a default of None takes anything."""
    if value is None or default is None:
        return value
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, kind) and (kind is bool) == isinstance(value, bool):
        return value
    raise ConfigError(f"setting {name} = {value!r} ({origin}) is not "
                      f"{_TYPE_NAMES.get(kind, kind.__name__)}; default: {default!r}")


def _merge(base: dict[str, Any], override: Mapping[str, Any], where: str,
           origin: str = "", sources: dict[str, str] | None = None) -> None:
    for key, value in override.items():
        if key not in base:
            raise ConfigError(f"unknown setting {where}{key!r}; known: {', '.join(sorted(base))}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"setting {where}{key} = {value!r} ({origin}) is not a "
                                  "mapping")
            if not base[key]:  # an empty default mapping is free-form (e.g. recipe overrides)
                base[key].update(value)
                if sources is not None:
                    sources[f"{where}{key}"] = origin
            else:
                _merge(base[key], value, f"{where}{key}.", origin, sources)
        else:
            base[key] = _typed(base[key], value, f"{where}{key}", origin)
            if sources is not None:
                sources[f"{where}{key}"] = origin


def load_config(defaults: Mapping[str, Any], path: Path | None = None,
                environ: Mapping[str, str] | None = None,
                sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Defaults, then the YAML file at `path`, then UCADI_* environment overrides. `sources`,
    when given, is filled with where each setting ('section.key') came from: 'default',
    'in FILE' or 'from UCADI_...'."""
    config = copy.deepcopy(dict(defaults))
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        _merge(config, loaded, "", f"in {path}", sources)
    for name, raw in (os.environ if environ is None else environ).items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__")]
        if keys[0] not in config:
            continue
        nested: dict[str, Any] = {}
        cursor = nested
        for key in keys[:-1]:
            cursor = cursor.setdefault(key, {})
        # A string setting keeps the text as given ("0123" stays "0123").
        cursor[keys[-1]] = raw if isinstance(_default_at(defaults, keys), str) else \
            yaml.safe_load(raw)
        _merge(config, nested, "", f"from {name}", sources)
    return config


def _default_at(defaults: Mapping[str, Any], keys: list[str]) -> Any:
    """The default at a key path, or None where there is none."""
    value: Any = defaults
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def describe_config(config: Mapping[str, Any], sources: Mapping[str, str],
                    where: str = "", indent: str = "") -> list[str]:
    """The configuration as YAML lines, each setting followed by where it came from."""
    lines = []
    for key, value in config.items():
        name = f"{where}{key}"
        if isinstance(value, Mapping) and value and name not in sources:
            lines.append(f"{indent}{key}:")
            lines += describe_config(value, sources, f"{name}.", indent + "  ")
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
            text = text.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"{indent}{key}: {text}  # {sources.get(name, DEFAULT_SOURCE)}")
    return lines
