"""The `ucadi` command line's conventions: --version, exit 1 when a command fails at its work,
2 when the command line itself is wrong, one line on stderr either way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ucadi import __version__
from ucadi.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_version_prints_the_package_version() -> None:
    result = subprocess.run([sys.executable, "-m", "ucadi.cli", "--version"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, f"ucadi {__version__}")


def test_runtime_failure_exits_1_and_usage_errors_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ct", "inspect", str(tmp_path / "absent")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("ucadi ct: error:") and "does not exist" in error
    assert "\n" not in error
    # A usage problem found after parsing (CommandError), as argparse's own errors.
    assert main(["ct", "preprocess", str(tmp_path), "--out", str(tmp_path / "x.npy"),
                 "--samples", "0"]) == 2
    assert "--samples must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as parse_error:
        main(["ct", "inspect", str(tmp_path), "--no-such-option"])
    assert parse_error.value.code == 2
    assert main(["no-such-command"]) == 2
