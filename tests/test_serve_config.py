"""`ucadi serve X --print-config` shows the configuration a service would run with and where
each setting came from; a value of the wrong type is one line naming the setting, the value,
where it came from and the type expected (exit 2), never a traceback from deep inside."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ucadi.cli import main
from ucadi.ops.config import ConfigError, load_config
from ucadi.ops.pki_cli import make_startup_kit


def test_print_config_names_the_source_of_every_setting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "crypto.yaml"
    config.write_text("server:\n  state_dir: /var/lib/ucadi/crypto\n")
    monkeypatch.setenv("UCADI_SERVER__METRICS_ADDRESS", "0.0.0.0:9100")
    assert main(["serve", "crypto", "--config", str(config), "--address", "0.0.0.0:7444",
                 "--print-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "server:"
    assert set(lines[1:]) == {
        "  address: 0.0.0.0:7444  # flag --address",
        "  metrics_address: 0.0.0.0:9100  # from UCADI_SERVER__METRICS_ADDRESS",
        "  health_address: ''  # default", "  tls_dir: ''  # default",
        f"  state_dir: /var/lib/ucadi/crypto  # in {config}"}


@pytest.mark.parametrize("service", ["aggregator", "crypto", "trainer", "inference"])
def test_every_service_prints_its_defaults(service: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", service, "--print-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "server:" in lines and all(line.endswith(":") or "  # " in line for line in lines)


def test_a_mistyped_value_is_one_line_naming_setting_value_source_and_type(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "trainer.yaml"
    config.write_text("site:\n  threads: four\n")
    assert main(["serve", "trainer", "--config", str(config), "--print-config"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"ucadi serve: error: setting site.threads = 'four' (in {config}) is not a whole "
        "number; default: 0")


@pytest.mark.parametrize(("override", "message"), [
    ({"UCADI_A__ON": "maybe"}, "setting a.on = 'maybe' (from UCADI_A__ON) is not true or false"),
    ({"UCADI_A__RATE": "[1]"}, "setting a.rate = [1] (from UCADI_A__RATE) is not a number"),
    ({"UCADI_A__NAMES": "x"}, "setting a.names = 'x' (from UCADI_A__NAMES) is not a list"),
])
def test_environment_overrides_are_typed_too(override: dict[str, str], message: str) -> None:
    defaults = {"a": {"on": False, "rate": 0.5, "names": ["x"], "id": ""}}
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(defaults, environ=override)


def test_numbers_widen_and_string_settings_keep_the_text_given() -> None:
    defaults = {"a": {"rate": 0.5, "id": "", "count": 1}}
    loaded = load_config(defaults, environ={"UCADI_A__RATE": "2", "UCADI_A__ID": "0123",
                                            "UCADI_A__COUNT": "7"})
    assert loaded["a"] == {"rate": 2.0, "id": "0123", "count": 7}


def test_the_trainer_takes_central_endpoints_from_its_startup_kit_unless_set(
        tmp_path: Path, federation_pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kit = make_startup_kit(federation_pki / "ca", tmp_path / "kit", "main-campus",
                           {"aggregator": "central.example.org:7443",
                            "crypto": "keys.example.org:7444"})
    assert main(["serve", "trainer", "--tls-dir", str(kit), "--crypto", "10.0.0.9:7444",
                 "--print-config"]) == 0
    out = capsys.readouterr().out
    assert f"aggregator_address: central.example.org:7443  # in {kit / 'endpoints.yaml'}" in out
    assert "crypto_address: 10.0.0.9:7444  # flag --crypto" in out


@pytest.mark.parametrize(("value", "message"), [
    ("", "setting site.custodian_key is required"),
    ("0123", "setting site.custodian_key (flag --custodian-key): custodian key '0123' is not "
             "64 hex digits"),
])
def test_a_trainer_without_a_valid_custodian_key_does_not_start(
        value: str, message: str, federation_pki: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Without the custodian's public key a site could not tell the custodian's wrapped key from
    one the central side made: the trainer refuses to start, naming the setting."""
    flags = ["--custodian-key", value] if value else []
    assert main(["serve", "trainer", "--tls-dir", str(federation_pki / "main-campus"),
                 *flags]) == 2
    assert message in capsys.readouterr().err
