"""Fixtures shared across test files: the tiny synthetic cohort and a federation PKI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` synthetic cohort (generated once per test session); returns manifest.csv."""
    from ucadi.ct.synth import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("tiny-cohort"), preset="tiny", seed=0,
                           workers=2)


@pytest.fixture(scope="session")
def federation_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A federation CA with certificates for the services, a custodian, an operator and sites.

    Folder layout: <root>/ca and <root>/<name>/{ca.crt,tls.crt,tls.key}.
    """
    from ucadi.ops.pki import create_ca, issue_certificate

    root = tmp_path_factory.mktemp("pki")
    create_ca(root / "ca")
    for name, role in (("aggregator", "service"), ("crypto", "service"),
                       ("custodian", "custodian"), ("operator", "operator"),
                       ("main-campus", "site"), ("optical-valley", "site"),
                       ("sino-french", "site"), ("nccid-uk", "site")):
        issue_certificate(root / "ca", root / name, name, role)
    return root


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An inference server's certificate and a radiology client's, from one test CA (files
    that define their own `pki` use theirs)."""
    from ucadi.ops.pki import create_ca, issue_certificate

    root = tmp_path_factory.mktemp("pki")
    create_ca(root / "ca", "test-federation-ca")
    return {"server": issue_certificate(root / "ca", root / "server", "inference", "service"),
            "client": issue_certificate(root / "ca", root / "client", "radiology", "operator")}
