"""Pairwise masks through the real central services (issue 21): hand-driven sites run the
masking phases over mutual TLS against a real aggregator and sum service on 127.0.0.1.

- A round where one participant drops after sharing its keys and another drops after sending
  its ciphertext (N = 5, t = 3) seals to a sum that, unmasked with what the aggregator serves,
  decrypts bit for bit to the FedAvg of the three uploads that count and passes its tag.
- The aggregator killed (SIGKILL) in the middle of the unmasking restarts on its state and
  finishes the round with the answers it stored before and after.
- A coalition of the central side and t - 1 = 2 sites, holding every byte the central side
  stored (its SQLite, its files) and received (every upload), and everything its two sites
  hold (their round keys, the shares sealed for them, the LWE secret), tries all that key
  material on every upload and every stored share, and reads no other site's update.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from federation_probe import ProbeSite
from masking_identities import Identities
from test_federation_crashes import restart_aggregator

from ucadi.demo.federation import FederationPlan, LocalFederation
from ucadi.lwe import fedavg
from ucadi.lwe.errors import LweError
from ucadi.lwe.integrity import TAG_SLOTS, SumCheck, encode_site_update
from ucadi.lwe.masking import (
    MaskingRound,
    PublicRoundKeys,
    SitePairing,
    answer_unmasking,
    apply_mask_terms,
    generate_round_keys,
    mask_sign,
    open_share_pair,
    pairwise_seed,
    unmask_sum,
)
from ucadi.lwe.ring import multiply_by_secret
from ucadi.lwe.scheme import Ciphertext, decode_phase, decrypt, sum_of_a
from ucadi.lwe.serialization import from_bytes
from ucadi.lwe.shamir import SharingError, recover_secret, share_from_bytes, share_to_bytes
from ucadi.lwe.stream import read_ciphertext
from ucadi.v1 import federation_pb2

pytestmark = pytest.mark.slow
SITES = ["north", "south", "east", "west", "wuhan"]
DROPS_BEFORE_UPLOAD = "wuhan"   # shares its keys, never uploads
DROPS_AFTER_UPLOAD = "west"     # uploads, never answers the unmasking
IDENTITIES = Identities()  # the probes' certified identities (sites check them, not the aggregator)
COALITION = ("north", "south")  # t - 1 sites with the central side
CASES = {"north": 9, "south": 5, "east": 7, "west": 11, "wuhan": 4}


def _federation(root: Path, manifest: Path, monkeypatch) -> LocalFederation:
    monkeypatch.setenv("UCADI_FEDERATION__PAIRWISE_MASKS", "true")
    monkeypatch.setenv("UCADI_FEDERATION__MASK_PHASE_TIMEOUT_S", "3")
    federation = LocalFederation(FederationPlan(
        root=root, manifest=manifest, sites=SITES, rounds=1, min_sites=2,
        round_timeout_s=10.0, recipe={"total_epochs": 2, "warmup_epochs": 1}))
    federation.provision()
    federation.create_key()
    federation.start_crypto()
    federation.start_aggregator()
    return federation


class MaskedProbe:
    """A probe site that runs the masking phases by hand and keeps what it held."""

    def __init__(self, probe: ProbeSite) -> None:
        self.probe = probe
        self.name = probe.name
        self.keys = generate_round_keys()
        self.context: MaskingRound | None = None
        self.advertised: dict[str, PublicRoundKeys] = {}
        self.participants: list[str] = []
        self.received_sealed: dict[str, bytes] = {}
        self.upload = b""

    def exchange_keys(self) -> None:
        public = IDENTITIES.advertise(self.name, self.keys)
        request = federation_pb2.ExchangeMaskKeysRequest(
            round=1, wait_seconds=30, keys=federation_pb2.RoundKeys(
                share_public=public.share_public, mask_public=public.mask_public,
                identity=public.identity))
        reply = self.probe.stub.ExchangeMaskKeys(request, timeout=60)
        assert reply.complete
        self.advertised = {k.site: PublicRoundKeys(k.share_public, k.mask_public, k.identity)
                           for k in reply.keys}
        self.context = MaskingRound("ucadi-demo", self.probe.federation.secret.key_id, 1,
                                    tuple(sorted(self.advertised)), reply.threshold,
                                    reply.neighbours)

    @property
    def pairing(self) -> SitePairing:
        assert self.context is not None
        return IDENTITIES.pairing(self.context, self.name, self.keys, self.advertised)

    def exchange_shares(self) -> None:
        sealed = self.pairing.share_messages()
        reply = self.probe.stub.ExchangeMaskShares(federation_pb2.ExchangeMaskSharesRequest(
            round=1, wait_seconds=30, shares=[federation_pb2.SealedSharePair(site=s, sealed=b)
                                              for s, b in sealed.items()]), timeout=60)
        assert reply.complete
        self.participants = list(reply.participants)
        self.received_sealed = {s.site: bytes(s.sealed) for s in reply.shares}

    def vector(self) -> np.ndarray:
        rng = np.random.default_rng(len(self.name))
        return (self.probe.vector + rng.normal(0, 0.01, self.probe.vector.size)).astype(
            np.float32)

    def upload_masked(self, tmp: Path) -> None:
        path = tmp / f"{self.name}.lwe"
        terms = self.pairing.mask_terms(self.participants)
        params = self.probe.federation.secret.params
        self.probe.cipher.encrypt_to_file(
            self.vector(), weight=self.probe.train_cases, round_number=1,
            layout_hash=self.probe.joined.model.layout_hash, path=path, site=self.name,
            pairwise=lambda batch, first: apply_mask_terms(batch, first, terms, params))
        self.upload = path.read_bytes()
        self.probe.send(self.probe.header(), self.upload)

    def received(self):
        assert self.context is not None
        return self.pairing.open_all(self.received_sealed)

    def answer(self, survivors: list[str], dropped: list[str]) -> None:
        assert self.context is not None
        answer = answer_unmasking(self.context, self.name, self.received(), survivors, dropped,
                                  graph=self.pairing.graph)
        self.probe.stub.SendUnmaskingShares(federation_pb2.UnmaskingShares(
            round=1, self_seeds=[federation_pb2.RevealedShare(owner=o, share=share_to_bytes(v))
                                 for o, v in answer.self_seeds.items()],
            mask_keys=[federation_pb2.RevealedShare(owner=o, share=share_to_bytes(v))
                       for o, v in answer.mask_keys.items()]), timeout=30)


def _all(probes: list[MaskedProbe], step: str) -> None:
    """Each probe's step at once (each call waits for the others)."""
    errors: list[BaseException] = []

    def run(probe: MaskedProbe) -> None:
        try:
            getattr(probe, step)()
        except BaseException as exc:  # reported below
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(p,)) for p in probes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not errors, errors


def test_a_masked_round_with_dropouts_decrypts_bit_for_bit_and_a_coalition_reads_nothing(
        tmp_path, tiny_cohort, monkeypatch):
    federation = _federation(tmp_path / "fed", tiny_cohort, monkeypatch)
    secret = federation.secret
    probes: list[MaskedProbe] = []
    try:
        probes = [MaskedProbe(ProbeSite(federation, name, CASES[name])) for name in SITES]
        assert probes[0].probe.joined.pairwise_masks
        federation.wait_for(lambda s: s.current.round == 1, timeout=60)
        _all(probes, "exchange_keys")
        _all(probes, "exchange_shares")
        assert sorted(probes[0].participants) == sorted(SITES)
        survivors = sorted(set(SITES) - {DROPS_BEFORE_UPLOAD})
        by_name = {p.name: p for p in probes}
        for name in survivors:
            by_name[name].upload_masked(tmp_path)
        # The deadline drops wuhan; every survivor but west answers the unmasking.
        info = _wait_for_state(probes[0], federation_pb2.ROUND_STATE_UNMASKING)
        assert sorted(info.unmasking_survivors) == survivors
        assert list(info.unmasking_dropped) == [DROPS_BEFORE_UPLOAD]
        answering = [name for name in survivors if name != DROPS_AFTER_UPLOAD]
        by_name[answering[0]].answer(list(info.unmasking_survivors),
                                     list(info.unmasking_dropped))
        # kill -9 of the aggregator mid-unmasking: it restarts on its SQLite state, in the
        # same phase with the same sets, and keeps the answer it stored.
        federation.processes["aggregator"].kill()
        restart_aggregator(federation)
        again = _wait_for_state(probes[0], federation_pb2.ROUND_STATE_UNMASKING)
        assert list(again.unmasking_survivors) == list(info.unmasking_survivors)
        for name in answering[1:]:
            by_name[name].answer(list(info.unmasking_survivors),
                                 list(info.unmasking_dropped))
        federation.wait_for(lambda s: s.current.latest_version >= 1, timeout=60)

        terms = probes[0].probe.stub.GetUnmasking(
            federation_pb2.GetUnmaskingRequest(round=1), timeout=30).terms
        sealed = read_ciphertext(federation.stored_global(1))
        body = sealed.body.copy()
        unmask_sum(body, [(bytes(t.seed), t.sign) for t in terms], secret.params)
        slots = decrypt(secret, Ciphertext(sealed.header, sealed.seeds, body))
        codec = probes[0].probe.cipher.codec
        encoded = {p.name: encode_site_update(p.vector(), p.probe.train_cases, codec, secret, 1,
                                              p.name) for p in probes}
        count = slots.size
        expected = np.sum([encoded[n].slots(0, count) for n in survivors], axis=0)
        assert np.array_equal(slots, expected)  # bit for bit, tag slots included
        check = SumCheck(secret, 1, survivors)
        check.add(0, slots[:count - TAG_SLOTS])
        check.verify(slots[count - TAG_SLOTS:])
        assert np.array_equal(fedavg(slots[:count - TAG_SLOTS], codec),
                              fedavg(expected[:count - TAG_SLOTS], codec))

        _coalition_reads_nothing(federation, by_name, survivors)
    finally:
        for probe in probes:
            probe.probe.close()
        federation.stop()


def _wait_for_state(probe: MaskedProbe, state: int, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = probe.probe.stub.GetRound(federation_pb2.GetRoundRequest(wait_seconds=2),
                                         timeout=30)
        if info.state == state:
            return info
    raise AssertionError(f"the round never reached state {state}")


def _coalition_reads_nothing(federation: LocalFederation, by_name: dict[str, MaskedProbe],
                             survivors: list[str]) -> None:
    """The central side with t - 1 sites: every key it can use on every byte it holds."""
    secret = federation.secret
    params = secret.params
    coalition = [by_name[name] for name in COALITION]
    context = coalition[0].context
    assert context is not None
    # Everything central: the aggregator's SQLite (keys, sealed shares, answers, masks) and
    # every file the central services keep, plus every upload it received.
    database = next((federation.root / "aggregator").rglob("aggregator.sqlite3"))
    with sqlite3.connect(database) as db:
        sealed_rows = db.execute("SELECT sender, recipient, sealed FROM mask_shares").fetchall()
        answers = db.execute("SELECT site, answer_json FROM mask_answers").fetchall()
        terms_blob = db.execute("SELECT terms FROM mask_rounds").fetchone()[0]
    uploads = {name: by_name[name].upload for name in survivors}
    stored = [path.read_bytes() for folder in ("aggregator", "crypto")
              for path in (federation.root / folder).rglob("*") if path.is_file()]
    singles = [data for data in stored if data[:4] == b"UCLW"
               and from_bytes(data).header.contributors == 1]
    targets = {name: data for name, data in uploads.items() if name not in COALITION}
    assert set(targets) == {"east", "west"}

    # Shares: every sealed pair opened with every coalition share key against every sender.
    opened: dict[str, dict[int, tuple[int, int]]] = {}
    for sender, recipient, blob in sealed_rows:
        for member in coalition:
            try:
                pair = open_share_pair(context, member.keys, IDENTITIES.key(member.name),
                                       member.name, sender, member.advertised, bytes(blob))
            except LweError:
                continue
            assert recipient == member.name  # only what was sealed for it opens
            opened.setdefault(sender, {})[context.holder(member.name)] = (pair.self_seed,
                                                                          pair.mask_key)
    revealed_keys: dict[str, dict[int, int]] = {}
    revealed_seeds: dict[str, dict[int, int]] = {}
    for site, text in answers:
        answer = json.loads(text)
        for owner, share in answer["mask_keys"].items():
            revealed_keys.setdefault(owner, {})[context.holder(site)] = share_from_bytes(
                bytes.fromhex(share))
        for owner, share in answer["self_seeds"].items():
            revealed_seeds.setdefault(owner, {})[context.holder(site)] = share_from_bytes(
                bytes.fromhex(share))
    for target in targets:
        shares = {x: pair[1] for x, pair in opened.get(target, {}).items()}
        shares.update(revealed_keys.get(target, {}))
        with pytest.raises(SharingError):  # fewer than t shares of a survivor's mask key
            recover_secret(shares, context.threshold)

    # What the answers give the central side (as they give it to unmask): the survivors'
    # self-mask seeds and the dropped site's mask key.
    t = context.threshold
    self_seeds = {owner: recover_secret(shares, t) for owner, shares in revealed_seeds.items()
                  if len(shares) >= t}
    mask_keys = {owner: X25519PrivateKey.from_private_bytes(recover_secret(shares, t))
                 for owner, shares in revealed_keys.items() if len(shares) >= t}
    assert set(mask_keys) == {DROPS_BEFORE_UPLOAD} and set(self_seeds) == set(survivors)

    def known_pairwise(target: str, peer: str) -> bytes | None:
        public = coalition[0].advertised[target].mask_public
        if peer in COALITION:
            member = by_name[peer]
            return pairwise_seed(context, member.keys.mask_key, public, peer, target)
        if peer in mask_keys:
            return pairwise_seed(context, mask_keys[peer], public, peer, target)
        return None

    every_seed = list(dict.fromkeys(
        [m.keys.self_seed for m in coalition] + list(self_seeds.values())
        + [terms_blob[i:i + 32] for i in range(0, len(terms_blob), 33)]
        + [seed for target in SITES for peer in SITES if peer != target
           and (seed := known_pairwise(target, peer)) is not None]))
    limit = max(CASES.values()) * 8 * 2 ** 16
    for name, data in [*targets.items(), *((f"stored{i}", d) for i, d in enumerate(singles))]:
        upload = from_bytes(data)
        n = upload.body.size
        phase = upload.body - multiply_by_secret(
            sum_of_a(upload.seeds, 0, upload.header.block_stop, params), secret.spectrum,
            params.modulus_bits).reshape(-1)[:n]

        def plausible(masks: list[tuple[bytes, int]], phase: np.ndarray = phase) -> float:
            candidate = phase.copy()
            unmask_sum(candidate, masks, params)
            slots = decode_phase(candidate, params)
            return float(np.mean(np.abs(slots[:-TAG_SLOTS - 1]) <= limit))

        # Generic: no mask, or any one known mask with either sign.
        tries = [[]] + [[(seed, sign)] for seed in every_seed for sign in (1, -1)]
        informed: list[tuple[bytes, int]] = []
        if name in targets:
            # Informed: every mask of this site the coalition can name, with its sign.
            informed = [(self_seeds[name], 1)] + [
                (seed, mask_sign(name, peer)) for peer in context.sites if peer != name
                and (seed := known_pairwise(name, peer)) is not None]
            tries.append(informed)
        best = max(plausible(masks) for masks in tries)
        assert best < 0.01, f"{name}'s upload became readable ({best:.3f})"
        if name in targets:  # control: the one kind of seed the coalition lacks reads it
            target = by_name[name]
            missing = [(pairwise_seed(context, target.keys.mask_key,
                                      target.advertised[peer].mask_public, name, peer),
                        mask_sign(name, peer))
                       for peer in context.sites if peer != name
                       and known_pairwise(name, peer) is None]
            assert missing and plausible(informed + missing) == 1.0
