"""deploy/examples/ holds a commented configuration per service: each loads against the
service's settings (no unknown key, every value of the right type); the central and trainer
examples list every setting, and a value that differs from the default says so on its line."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ucadi.ops.config import load_config
from ucadi.serve_cli import SETTINGS_MODULES

EXAMPLES = Path(__file__).resolve().parents[1] / "deploy" / "examples"
COMPLETE = ("aggregator", "crypto", "trainer")


def leaves(tree: dict[str, Any], where: str = "") -> Iterator[tuple[str, Any]]:
    """('section.key', value) of every setting; a free-form (empty default) mapping is one."""
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{where}{key}.")
        else:
            yield f"{where}{key}", value


@pytest.mark.parametrize("service", sorted(SETTINGS_MODULES))
def test_example_loads_against_the_services_settings(service: str) -> None:
    defaults = importlib.import_module(SETTINGS_MODULES[service]).DEFAULTS
    load_config(defaults, EXAMPLES / f"{service}.yaml", environ={})


@pytest.mark.parametrize("service", COMPLETE)
def test_example_lists_every_setting_and_marks_what_differs_from_the_default(
        service: str) -> None:
    defaults = dict(leaves(importlib.import_module(SETTINGS_MODULES[service]).DEFAULTS))
    text = (EXAMPLES / f"{service}.yaml").read_text()
    example = dict(leaves(yaml.safe_load(text)))
    assert example.keys() == defaults.keys()
    for name, value in example.items():
        if value != defaults[name]:
            key = name.rsplit(".", 1)[-1]
            line = next(line for line in text.splitlines()
                        if re.match(rf"\s*{key}:", line))
            assert "# default:" in line, f"{name}: {value!r} differs from {defaults[name]!r}"
