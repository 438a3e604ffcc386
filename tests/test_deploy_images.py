"""The container images are consistent with the code and the charts (no Docker engine here, so
the Dockerfiles are checked statically: sources exist, entrypoint and services exist, non-root
numeric user, ports and torch pin agree with the charts and the Makefile)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from ucadi.cli import COMMANDS
from ucadi.serve_cli import SERVICES

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]
CHART_VALUES = [ROOT / "deploy" / "helm" / c / "values.yaml" for c in ("ucadi-central",
                                                                        "ucadi-site")]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    """The instructions after the last FROM (what the running container is)."""
    steps = instructions(dockerfile)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_source_exists_and_is_let_through_dockerignore(dockerfile: Path) -> None:
    ignore = (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for keyword, args in instructions(dockerfile):
        if keyword == "COPY" and not args.startswith("--from"):
            *sources, _destination = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"
                assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_the_ucadi_entry_point_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    stage = dict(final_stage(dockerfile))
    assert stage["USER"] == "10001:10001"
    assert stage["ENTRYPOINT"] == '["ucadi"]'
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["ucadi"] == "ucadi.cli:main"
    assert "serve" in COMMANDS
    assert {"aggregator", "crypto", "trainer", "inference"} <= set(SERVICES)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_pins_the_same_torch_as_the_makefile(dockerfile: Path) -> None:
    makefile_pin = re.search(r"torch==([\d.]+)", (ROOT / "Makefile").read_text())
    image_pin = re.search(r"ARG TORCH_VERSION=([\d.]+)", dockerfile.read_text())
    assert makefile_pin and image_pin and makefile_pin.group(1) == image_pin.group(1)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_exposes_every_port_the_charts_use(dockerfile: Path) -> None:
    exposed = {int(p) for p in dict(final_stage(dockerfile))["EXPOSE"].split()}
    chart_ports = set()
    for path in CHART_VALUES:
        values = yaml.safe_load(path.read_text())
        chart_ports |= set(values["ports"].values())
        chart_ports |= {v["port"] for v in values.values() if isinstance(v, dict) and "port" in v}
    assert chart_ports == {7443, 7444, 7445, 8001, 9100, 9101}
    assert chart_ports <= exposed


def test_read_only_root_filesystem_needs_only_tmp_and_volumes() -> None:
    env = " ".join(args for keyword, args in final_stage(DOCKERFILES[0]) if keyword == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "HOME=/tmp", "MPLCONFIGDIR=/tmp/"):
        assert setting in env
    assert "compileall" in DOCKERFILES[0].read_text()
