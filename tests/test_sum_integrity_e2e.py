"""Security finding 19.3 end to end: the central side alters a sealed global version in its
own files (ciphertext and recorded digest), as anyone with the central host could, and a real
trainer refuses it: not published, not trained on, a metric and its status say why."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
import urllib.request

import numpy as np
import pytest
from federation_probe import ProbeSite, central_side

from ucadi.lwe.scheme import Ciphertext
from ucadi.lwe.stream import read_ciphertext, write_ciphertext
from ucadi.ops.tls import secure_channel
from ucadi.v1 import trainer_pb2, trainer_pb2_grpc

pytestmark = pytest.mark.slow
TRAINER = "main-campus"
PROBES = ["optical-valley", "sino-french"]


def _shift_five_parameters(path, delta_value: float = 0.5) -> None:
    """The reviewer's attack: +delta on five chosen parameters of the summed ciphertext,
    written back in place with a fresh trailing digest (no key involved)."""
    ct = read_ciphertext(path)
    params = ct.header.params
    body = ct.body.copy()
    # Shift by 0.5 at whatever total weight: a whole number of plaintext units per slot.
    units = int(delta_value * 2 ** ct.header.frac_bits * 16)
    for slot in (0, 7, 100, 1000, 2000):
        body[slot] = np.uint64((int(body[slot]) + units * params.delta)
                               % (1 << params.modulus_bits))
    forged = path.with_name(path.name + ".forged")
    write_ciphertext(forged, Ciphertext(ct.header, ct.seeds, body))
    os.replace(forged, path)


def test_a_site_refuses_a_global_version_the_central_side_altered(tmp_path, tiny_cohort):
    federation = central_side(tmp_path / "fed", tiny_cohort, [TRAINER, *PROBES])
    plan = federation.plan
    probes = []
    try:
        probes = [ProbeSite(federation, name) for name in PROBES]
        federation.wait_for(lambda s: s.current.round == 1, timeout=60)
        for probe in probes:
            probe.send(probe.header(), probe.encrypted_update(1, tmp_path / f"{probe.name}.lwe"))
        federation.wait_for(lambda s: s.current.latest_version >= 1, timeout=120)
        # The attacker: the central host's files (the sum service's sealed sum, which sites
        # fetch, and the digest the aggregator recorded for it), no key.
        stored = federation.stored_global(1)
        _shift_five_parameters(stored)
        database = next((plan.root / "aggregator").rglob("aggregator.sqlite3"))
        with sqlite3.connect(database) as db:
            db.execute("UPDATE versions SET sha256=? WHERE version=1",
                       (hashlib.sha256(stored.read_bytes()).hexdigest(),))

        trainer = federation.start_trainer(TRAINER)
        federation.approve_sites([TRAINER])
        channel = secure_channel(trainer.target, federation.tls("operator"))
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        deadline = time.monotonic() + 180
        status = stub.GetStatus(trainer_pb2.TrainerStatusRequest(), timeout=10)
        while status.phase != "refused-sum" and time.monotonic() < deadline:
            assert trainer.alive(), trainer.tail()
            time.sleep(0.5)
            status = stub.GetStatus(trainer_pb2.TrainerStatusRequest(), timeout=10)
        channel.close()
        assert status.phase == "refused-sum", trainer.tail()
        assert "fails its integrity tag" in status.last_error
        assert status.published_version == 0
        assert not list((plan.root / "sites" / TRAINER / "models").rglob("*.safetensors")), \
            "nothing made from the altered sum is published"
        metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{trainer.metrics_port}/metrics", timeout=10).read().decode()
        refused = [line for line in metrics.splitlines()
                   if line.startswith('ucadi_trainer_sums_refused_total{reason="tag"}')]
        assert refused and float(refused[0].split()[-1]) >= 1
        assert "global version refused, not published or trained on" in trainer.log_path.read_text()
        assert trainer.alive(), "the site stays up, waiting for a sum that passes"
    finally:
        for probe in probes:
            probe.close()
        federation.stop()
