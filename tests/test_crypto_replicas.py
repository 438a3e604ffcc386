"""Two sum-service replica processes share a round by block range; a killed replica resumes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ucadi.lwe import PlainSlots, generate_secret_key
from ucadi.lwe.stream import decrypt_file, encrypt_to_file
from ucadi.ops.serving import grpc_options
from ucadi.ops.tls import TLSFiles, secure_channel
from ucadi.wire.crypto_client import ShardedSumClient, SumClient

LAYOUT = hashlib.sha256(b"replica-layout").digest()
SITES = ("main-campus", "optical-valley", "sino-french", "nccid-uk")
STARTUP_SECONDS = 60


def _start_replica(state_dir: Path, pki: Path, port_file: Path) -> tuple[subprocess.Popen, int]:
    port_file.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "services.crypto.server", "--state-dir", str(state_dir),
         "--tls-dir", str(pki / "crypto"), "--address", "127.0.0.1:0",
         "--metrics-address", "", "--port-file", str(port_file)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + STARTUP_SECONDS
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"crypto replica did not start (exit code {process.poll()})")
        time.sleep(0.05)
    return process, int(port_file.read_text().split()[0])


def _client(port: int, pki: Path) -> SumClient:
    return SumClient(secure_channel(f"127.0.0.1:{port}", TLSFiles.from_dir(pki / "aggregator"),
                                    options=tuple(grpc_options())))


@pytest.mark.slow
def test_two_replicas_sum_their_block_ranges_and_survive_a_kill(tmp_path: Path,
                                                                federation_pki: Path) -> None:
    secret = generate_secret_key()
    slot_count = 9 * secret.params.ring_degree + 123  # 10 blocks, the last one partial
    rng = np.random.default_rng(11)
    plains = {s: rng.integers(-2**20, 2**20, slot_count) for s in SITES}
    for site in SITES:
        encrypt_to_file(tmp_path / f"{site}.ct", secret, PlainSlots(plains[site]),
                        layout_hash=LAYOUT, round_number=4)
    replicas = [_start_replica(tmp_path / f"replica{i}", federation_pki, tmp_path / f"port{i}")
                for i in range(2)]
    try:
        sharded = ShardedSumClient([_client(port, federation_pki) for _, port in replicas])
        sharded.open_round("fed", 4, key_id=secret.key_id_hex, parameter_set=secret.params.name,
                           layout_hash=LAYOUT, slot_count=slot_count)
        assert sharded.ranges == [(0, 5), (5, 10)]
        for site in SITES[:3]:
            receipts = sharded.add_contribution("fed", 4, site, tmp_path / f"{site}.ct")
            assert [r.contributions for r in receipts] == [SITES.index(site) + 1] * 2

        killed, _ = replicas[1]
        killed.send_signal(signal.SIGKILL)  # no graceful shutdown: only fsynced state remains
        killed.wait(timeout=30)
        replicas[1] = _start_replica(tmp_path / "replica1", federation_pki, tmp_path / "port1")
        sharded.replicas[1] = _client(replicas[1][1], federation_pki)
        status = sharded.replicas[1].status("fed", 4)
        assert list(status.sites) == sorted(SITES[:3])
        assert (status.block_start, status.block_stop) == (5, 10)

        sharded.add_contribution("fed", 4, SITES[3], tmp_path / f"{SITES[3]}.ct")
        total = sharded.seal("fed", 4, tmp_path / "sum.ct")
        assert np.array_equal(decrypt_file(secret, total), sum(plains.values()))
    finally:
        for process, _ in replicas:
            process.terminate()
            process.wait(timeout=30)
