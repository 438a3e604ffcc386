"""`ucadi keys`: the custodian creates, wraps and rotates; sites init, register and fetch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.crypto.server import run_crypto_service
from ucadi.cli import main
from ucadi.lwe import SecretKey
from ucadi.ops.tls import TLSFiles

SITES = ("main-campus", "sino-french")


def test_custodian_and_site_key_flow_through_the_cli(tmp_path: Path,
                                                     federation_pki: Path) -> None:
    server = run_crypto_service(tmp_path / "state", "127.0.0.1:0",
                                TLSFiles.from_dir(federation_pki / "crypto"), None)
    try:
        def at(who: str) -> list[str]:
            return ["--server", server.target, "--tls", str(federation_pki / who)]

        for site in SITES:
            assert main(["keys", "site-init", "--out", str(tmp_path / site)]) == 0
            assert main(["keys", "register", "--site-keys", str(tmp_path / site), *at(site)]) == 0
        custodian = tmp_path / "custodian"
        assert main(["keys", "create", "--out", str(custodian)]) == 0
        assert main(["keys", "create", "--out", str(custodian)]) == 2  # never silently replaced
        assert main(["keys", "wrap", "--secret", str(custodian / "lwe_secret.key"),
                     "--sites", ",".join(SITES), *at("custodian")]) == 0
        first = SecretKey.load(custodian / "lwe_secret.key")
        for site in SITES:
            out = tmp_path / site / "lwe.key"
            assert main(["keys", "fetch", "--site-keys", str(tmp_path / site), "--out", str(out),
                         *at(site)]) == 0
            assert np.array_equal(SecretKey.load(out).coefficients, first.coefficients)

        assert main(["keys", "rotate", "--out", str(custodian), *at("custodian")]) == 0
        rotated = SecretKey.load(custodian / "lwe_secret.key")
        assert rotated.key_id != first.key_id
        assert (custodian / f"lwe_secret-{first.key_id_hex}.key").exists()
        out = tmp_path / "main-campus" / "lwe.key"
        assert main(["keys", "fetch", "--site-keys", str(tmp_path / "main-campus"), "--out",
                     str(out), *at("main-campus")]) == 0
        assert SecretKey.load(out).key_id == rotated.key_id

        assert main(["keys", "wrap", "--secret", str(custodian / "lwe_secret.key"),
                     "--sites", "nccid-uk", *at("custodian")]) == 2  # not registered
    finally:
        server.stop(0)
