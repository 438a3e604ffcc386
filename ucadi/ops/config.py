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

from ucadi.errors import UcadiError

ENV_PREFIX = "UCADI_"


class ConfigError(UcadiError):
    """A configuration file or override is malformed or names an unknown setting."""


def _merge(base: dict[str, Any], override: Mapping[str, Any], where: str) -> None:
    for key, value in override.items():
        if key not in base:
            raise ConfigError(f"unknown setting {where}{key!r}; known: {', '.join(sorted(base))}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"setting {where}{key!r} must be a mapping")
            if not base[key]:  # an empty default mapping is free-form (e.g. recipe overrides)
                base[key].update(value)
            else:
                _merge(base[key], value, f"{where}{key}.")
        else:
            base[key] = value


def load_config(defaults: Mapping[str, Any], path: Path | None = None,
                environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Defaults, then the YAML file at `path`, then UCADI_* environment overrides."""
    config = copy.deepcopy(dict(defaults))
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        _merge(config, loaded, "")
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
        cursor[keys[-1]] = yaml.safe_load(raw)
        _merge(config, nested, "")
    return config
