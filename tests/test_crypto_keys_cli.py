"""`ucadi keys`: the custodian creates, wraps and rotates; sites init, register and fetch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.crypto.server import run_crypto_service
from ucadi.cli import main
from ucadi.lwe import SecretKey
from ucadi.lwe.custodian import PUBLIC_KEY_FILE as CUSTODIAN_PUBLIC_FILE
from ucadi.lwe.custodian import generate_custodian_key
from ucadi.lwe.keywrap import PUBLIC_KEY_FILE, fingerprint
from ucadi.lwe.pins import PINS_FILE
from ucadi.ops.tls import TLSFiles

SITES = ("main-campus", "sino-french")


def printed_fingerprint(site_keys: Path) -> str:
    """What `keys site-init` printed for the site to read out to the custodian."""
    return fingerprint((site_keys / PUBLIC_KEY_FILE).read_bytes())


def test_custodian_and_site_key_flow_through_the_cli(tmp_path: Path, federation_pki: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    server = run_crypto_service(tmp_path / "state", "127.0.0.1:0",
                                TLSFiles.from_dir(federation_pki / "crypto"), None)
    try:
        def at(who: str) -> list[str]:
            return ["--server", server.target, "--tls", str(federation_pki / who)]

        custodian = tmp_path / "custodian"
        for site in SITES:
            assert main(["keys", "site-init", "--out", str(tmp_path / site)]) == 0
            assert main(["keys", "register", "--site-keys", str(tmp_path / site), *at(site)]) == 0
            assert main(["keys", "pin", "--site", site, "--pins",
                         str(custodian / PINS_FILE), "--fingerprint", printed_fingerprint(
                             tmp_path / site)]) == 0
        capsys.readouterr()
        assert main(["keys", "create", "--out", str(custodian)]) == 0
        printed_custodian_key = capsys.readouterr().out.strip().splitlines()[-1]
        assert printed_custodian_key == (custodian / CUSTODIAN_PUBLIC_FILE).read_text().strip()
        assert main(["keys", "create", "--out", str(custodian)]) == 2  # never silently replaced
        assert main(["keys", "wrap", "--secret", str(custodian / "lwe_secret.key"),
                     "--sites", ",".join(SITES), *at("custodian")]) == 0
        first = SecretKey.load(custodian / "lwe_secret.key")
        for site in SITES:
            out = tmp_path / site / "lwe.key"
            assert main(["keys", "fetch", "--site-keys", str(tmp_path / site), "--out", str(out),
                         "--custodian-key", printed_custodian_key, *at(site)]) == 0
            assert np.array_equal(SecretKey.load(out).coefficients, first.coefficients)

        assert main(["keys", "rotate", "--out", str(custodian), *at("custodian")]) == 0
        rotated = SecretKey.load(custodian / "lwe_secret.key")
        assert rotated.key_id != first.key_id
        assert (custodian / f"lwe_secret-{first.key_id_hex}.key").exists()
        out = tmp_path / "main-campus" / "lwe.key"
        assert main(["keys", "fetch", "--site-keys", str(tmp_path / "main-campus"), "--out",
                     str(out), "--custodian-key", printed_custodian_key, *at("main-campus")]) == 0
        assert SecretKey.load(out).key_id == rotated.key_id

        assert main(["keys", "wrap", "--secret", str(custodian / "lwe_secret.key"),
                     "--sites", "nccid-uk", *at("custodian")]) == 2  # not registered
        # A site configured with another custodian key refuses the custodian's blob.
        assert main(["keys", "fetch", "--site-keys", str(tmp_path / "main-campus"), "--out",
                     str(out), "--custodian-key", generate_custodian_key().public_hex(),
                     *at("main-campus")]) == 2
        assert "not signed by the configured key custodian" in capsys.readouterr().err
        assert main(["keys", "fetch", "--site-keys", str(tmp_path / "main-campus"), "--out",
                     str(out), "--custodian-key", "abc", *at("main-campus")]) == 2
        assert "64 hex digits" in capsys.readouterr().err
    finally:
        server.stop(0)


def test_the_central_side_swapping_a_sites_key_gets_nothing_wrapped(
        tmp_path: Path, federation_pki: Path, capsys) -> None:
    """The attack of the security review: replace a site's public key in the key service's
    database; the custodian's routine `keys wrap` must refuse rather than wrap for it."""
    import sqlite3

    from ucadi.lwe.keywrap import generate_site_key_pair

    state = tmp_path / "state"
    server = run_crypto_service(state, "127.0.0.1:0",
                                TLSFiles.from_dir(federation_pki / "crypto"), None)
    try:
        def at(who: str) -> list[str]:
            return ["--server", server.target, "--tls", str(federation_pki / who)]

        site, custodian = "main-campus", tmp_path / "custodian"
        assert main(["keys", "site-init", "--out", str(tmp_path / site)]) == 0
        assert main(["keys", "register", "--site-keys", str(tmp_path / site), *at(site)]) == 0
        assert main(["keys", "create", "--out", str(custodian)]) == 0
        wrap = ["keys", "wrap", "--secret", str(custodian / "lwe_secret.key"), "--sites", site,
                *at("custodian")]
        capsys.readouterr()
        assert main(wrap) == 2  # not pinned yet: nothing is wrapped
        assert f"site {site} is not pinned" in capsys.readouterr().err
        assert main(["keys", "pin", "--site", site, "--pins", str(custodian / PINS_FILE),
                     "--fingerprint", printed_fingerprint(tmp_path / site)]) == 0
        attacker = generate_site_key_pair().public_pem()
        with sqlite3.connect(state / "keys.sqlite") as db:
            db.execute("UPDATE site_keys SET public_key_pem = ?, fingerprint = ? WHERE site = ?",
                       (attacker, printed_fingerprint(tmp_path / site), site))
        assert main(wrap) == 2
        error = capsys.readouterr().err
        assert fingerprint(attacker) in error and printed_fingerprint(tmp_path / site) in error
        assert "refusing to wrap" in error
        with sqlite3.connect(state / "keys.sqlite") as db:
            assert db.execute("SELECT COUNT(*) FROM wrapped_keys").fetchone()[0] == 0
    finally:
        server.stop(0)
