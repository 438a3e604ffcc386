"""An aggregator whose config names no LWE key id takes the key service's active key (what
the custodian activated), waiting for it at start; a named key id is used as it is. A real
crypto service (mutual TLS, SQLite) on 127.0.0.1."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import pytest

from services.aggregator.config import DEFAULTS
from services.aggregator.crypto_backend import learn_active_key
from services.crypto.server import run_crypto_service
from ucadi.errors import UcadiError
from ucadi.lwe import generate_secret_key
from ucadi.lwe.custodian import generate_custodian_key
from ucadi.lwe.keywrap import generate_site_key_pair, load_public_key, wrap_secret
from ucadi.ops.tls import TLSFiles, secure_channel
from ucadi.wire.crypto_client import KeyClient


def aggregator_config(key_address: str, key_id: str = "") -> dict:
    config = copy.deepcopy(DEFAULTS)
    config["encryption"]["key_id"] = key_id
    config["server"].update(crypto_address="", key_address=key_address)
    return config


def test_the_aggregator_learns_the_key_the_custodian_activates(tmp_path: Path,
                                                              federation_pki: Path) -> None:
    tls = lambda who: TLSFiles.from_dir(federation_pki / who)  # noqa: E731
    crypto = run_crypto_service(tmp_path / "crypto", "127.0.0.1:0", tls("crypto"),
                                metrics_address=None)
    try:
        with pytest.raises(UcadiError, match="has no active key after 0 s"):
            learn_active_key(aggregator_config(crypto.target), tls("aggregator"), wait_s=0)

        secret = generate_secret_key()

        def custodian_activates_a_key() -> None:
            time.sleep(0.5)
            site_keys = generate_site_key_pair()
            with secure_channel(crypto.target, tls("main-campus")) as channel:
                KeyClient(channel).register_site_key(site_keys.public_pem())
            with secure_channel(crypto.target, tls("custodian")) as channel:
                KeyClient(channel).put_wrapped_keys(
                    secret.key_id_hex, secret.params.name,
                    {"main-campus": wrap_secret(secret, "main-campus",
                                                load_public_key(site_keys.public_pem()),
                                                generate_custodian_key())})

        custodian = threading.Thread(target=custodian_activates_a_key)
        custodian.start()
        config = aggregator_config(crypto.target)
        learn_active_key(config, tls("aggregator"), wait_s=60, poll_s=0.2)
        custodian.join()
        assert config["encryption"]["key_id"] == secret.key_id_hex
        assert config["encryption"]["parameter_set"] == secret.params.name

        named = aggregator_config(crypto.target, key_id="ab" * 16)
        learn_active_key(named, tls("aggregator"), wait_s=0)
        assert named["encryption"]["key_id"] == "ab" * 16
    finally:
        crypto.stop(0)
