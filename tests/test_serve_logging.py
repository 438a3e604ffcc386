"""`ucadi serve X --log-format json --log-level LEVEL`: a real service process writes one JSON
object per log line, naming the service, at the chosen level; the default is text lines."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ucadi.cli import build_parser
from ucadi.ops.logs import name_service, setup_logging

REPO = Path(__file__).resolve().parents[1]


def serve_crypto(tmp_path: Path, pki: Path, *flags: str) -> list[str]:
    """Start `ucadi serve crypto` with `flags`, wait until it serves, stop it; its stderr lines."""
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [sys.executable, "-m", "ucadi.cli", "serve", "crypto", "--state-dir",
         str(tmp_path / "state"), "--address", "127.0.0.1:0", "--tls-dir", str(pki / "crypto"),
         "--port-file", str(port_file), *flags],
        cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        port_file.unlink(missing_ok=True)
    return stderr.splitlines()


def test_json_logs_at_the_chosen_level(tmp_path: Path, federation_pki: Path) -> None:
    lines = serve_crypto(tmp_path, federation_pki, "--log-format", "json",
                         "--log-level", "debug")
    records = [json.loads(line) for line in lines]
    assert records and {r["service"] for r in records} == {"crypto"}
    assert any(r["level"] == "info" and "serving" in r["message"] for r in records)
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)



def test_records_below_the_chosen_level_are_dropped_and_lines_name_the_service(
        capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    kept_handlers, kept_level = list(root.handlers), root.level
    try:
        setup_logging("crypto", "warning", "text")
        logging.getLogger("ucadi.test").info("not written")
        logging.getLogger("ucadi.test").warning("written")
        assert capsys.readouterr().err.strip().endswith("crypto WARNING written")
        name_service("trainer[main-campus]")  # as a trainer does once it knows its site
        logging.getLogger("ucadi.test").warning("relabelled")
        assert capsys.readouterr().err.strip().endswith("trainer[main-campus] WARNING relabelled")
    finally:
        root.handlers[:] = kept_handlers
        root.setLevel(kept_level)


@pytest.mark.parametrize("flag", [["--log-level", "chatty"], ["--log-format", "xml"]])
def test_an_unknown_level_or_format_is_a_usage_error(flag: list[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        build_parser("serve").parse_args(["serve", "crypto", *flag])
    assert refused.value.code == 2
