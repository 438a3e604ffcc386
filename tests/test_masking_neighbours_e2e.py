"""SecAgg+'s sparse neighbour graph through a real aggregator and crypto service (issue 21):
five probe sites with `federation.mask_neighbours: 2` (a ring, t = 2 of a site's 3 holders)
learn k from MaskKeys, draw the aggregator's graph, share and mask within their
neighbourhoods; one drops before uploading (its pairwise masks are rebuilt from its two
neighbours' answers), and the sealed sum less the served masks decrypts bit for bit to the
survivors' sum, its tag verifying. (On a 5-ring with t = 2 a second dropout, after uploading,
always leaves some neighbourhood short: that case is tested in memory and in-process,
tests/test_lwe_neighbours.py, tests/test_aggregator_neighbours.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from federation_probe import ProbeSite
from test_masking_e2e import (
    CASES,
    DROPS_BEFORE_UPLOAD,
    SITES,
    MaskedProbe,
    _all,
    _federation,
    _wait_for_state,
)

from ucadi.lwe import fedavg
from ucadi.lwe.integrity import TAG_SLOTS, SumCheck, encode_site_update
from ucadi.lwe.masking import unmask_sum
from ucadi.lwe.scheme import Ciphertext, decrypt
from ucadi.lwe.stream import read_ciphertext
from ucadi.v1 import federation_pb2

pytestmark = pytest.mark.slow


def test_a_sparse_masked_round_with_dropouts_decrypts_bit_for_bit(tmp_path, tiny_cohort,
                                                                  monkeypatch):
    monkeypatch.setenv("UCADI_FEDERATION__MASK_NEIGHBOURS", "2")
    federation = _federation(tmp_path / "fed", tiny_cohort, monkeypatch)
    secret = federation.secret
    probes: list[MaskedProbe] = []
    try:
        probes = [MaskedProbe(ProbeSite(federation, name, CASES[name])) for name in SITES]
        federation.wait_for(lambda s: s.current.round == 1, timeout=60)
        _all(probes, "exchange_keys")
        context = probes[0].context
        assert context is not None and (context.neighbours, context.threshold) == (2, 2)
        graphs = {p.name: p.pairing.graph for p in probes}
        graph = graphs[SITES[0]]
        assert all(g == graph for g in graphs.values())
        _all(probes, "exchange_shares")  # each to its 3 holders: the aggregator checks it
        by_name = {p.name: p for p in probes}
        for probe in probes:
            assert set(probe.received_sealed) == graph.holders(probe.name)
        survivors = sorted(set(SITES) - {DROPS_BEFORE_UPLOAD})
        for name in survivors:
            assert len(by_name[name].pairing.mask_terms(by_name[name].participants)) == 3
            by_name[name].upload_masked(tmp_path)
        info = _wait_for_state(probes[0], federation_pb2.ROUND_STATE_UNMASKING)
        assert sorted(info.unmasking_survivors) == survivors
        assert list(info.unmasking_dropped) == [DROPS_BEFORE_UPLOAD]
        for name in survivors:
            by_name[name].answer(list(info.unmasking_survivors), list(info.unmasking_dropped))
        federation.wait_for(lambda s: s.current.latest_version >= 1, timeout=60)

        terms = probes[0].probe.stub.GetUnmasking(
            federation_pb2.GetUnmaskingRequest(round=1), timeout=30).terms
        assert len(terms) == len(survivors) + 2  # self-masks, wuhan's two neighbours' masks
        sealed = read_ciphertext(federation.stored_global(1))
        body = sealed.body.copy()
        unmask_sum(body, [(bytes(t.seed), t.sign) for t in terms], secret.params)
        slots = decrypt(secret, Ciphertext(sealed.header, sealed.seeds, body))
        codec = probes[0].probe.cipher.codec
        count = slots.size
        expected = np.sum([encode_site_update(by_name[n].vector(), by_name[n].probe.train_cases,
                                              codec, secret, 1, n).slots(0, count)
                           for n in survivors], axis=0)
        assert np.array_equal(slots, expected)
        check = SumCheck(secret, 1, survivors)
        check.add(0, slots[:count - TAG_SLOTS])
        check.verify(slots[count - TAG_SLOTS:])
        assert np.array_equal(fedavg(slots[:count - TAG_SLOTS], codec),
                              fedavg(expected[:count - TAG_SLOTS], codec))
    finally:
        for probe in probes:
            probe.probe.close()
        federation.stop()
