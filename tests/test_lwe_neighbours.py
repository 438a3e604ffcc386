"""SecAgg+'s sparse neighbour graph (ucadi/lwe/neighbours.py) through the masking protocol's
production functions, in memory: every party draws the same k-regular graph from the key set;
sites mask and share only among neighbours, and the unmasked sum is the shared-key sum byte for
byte with dropouts before and after uploading; a neighbourhood short of t survivors stops the
unmasking with its name; a coalition of the central side and t - 1 of a victim's neighbours,
holding the LWE secret, cannot read the victim's update; bad parameters are refused."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pytest
from masking_identities import Identities, strip_known_masks

from ucadi.lwe import FixedPointCodec, generate_secret_key
from ucadi.lwe.integrity import TAG_SLOTS, SumCheck, encode_site_update
from ucadi.lwe.masking import (
    MaskingError,
    MaskingRound,
    PublicRoundKeys,
    RoundKeys,
    SharePair,
    answer_unmasking,
    generate_round_keys,
    key_set_digest,
    pairwise_seed,
    recover_round_secrets,
    unmask_sum,
    unmasking_terms,
)
from ucadi.lwe.neighbours import (
    NeighbourGraph,
    choose_neighbours,
    round_graph,
    short_neighbourhoods,
)
from ucadi.lwe.scheme import Ciphertext, add, decrypt, encrypt
from ucadi.lwe.serialization import from_bytes, to_bytes
from ucadi.lwe.shamir import SharingError, recover_secret

SECRET = generate_secret_key()
PARAMS = SECRET.params
CODEC = FixedPointCodec.for_parameters(PARAMS)
LAYOUT = hashlib.sha256(b"neighbours-layout").digest()
ROUND = 4
SITES = tuple(f"site-{i}" for i in range(8))  # sorted
K, T = 4, 3  # each site: 4 neighbours; its shares held by 5 (them and itself), any 3 recover
VALUES = 3_000
IDENTITIES = Identities()


def _context(k: int = K, t: int = T, sites=SITES) -> MaskingRound:
    return MaskingRound("fed", SECRET.key_id, ROUND, tuple(sites), t, k)


@dataclass
class SparseRound:
    """What a sparse round's parties send, hold and receive."""

    context: MaskingRound
    keys: dict[str, RoundKeys]
    advertised: dict[str, PublicRoundKeys]
    received: dict[str, dict[str, SharePair]]  # recipient -> sender -> share pair
    sent: dict[str, set[str]]                  # sender -> the sites it sealed shares for
    uploads: dict[str, bytes] = field(default_factory=dict)
    unmasked: dict[str, bytes] = field(default_factory=dict)
    plain: dict[str, np.ndarray] = field(default_factory=dict)

    def pairing(self, site: str):
        return IDENTITIES.pairing(self.context, site, self.keys[site], self.advertised)

    @property
    def graph(self) -> NeighbourGraph:
        return round_graph(self.context)


def _share(context: MaskingRound) -> SparseRound:
    keys, advertised, sealed, received = IDENTITIES.share_round(context)
    return SparseRound(context, keys, advertised, received,
                       {site: set(messages) for site, messages in sealed.items()})


def _upload(sim: SparseRound, site: str, participants=SITES) -> None:
    rng = np.random.default_rng(sorted(SITES).index(site))
    update = encode_site_update(rng.normal(0, 0.3, VALUES).astype(np.float32), 10, CODEC,
                                SECRET, ROUND, site)
    sim.plain[site] = update.slots(0, VALUES + 1 + TAG_SLOTS)
    ct = encrypt(SECRET, update, layout_hash=LAYOUT, round_number=ROUND)
    sim.unmasked[site] = to_bytes(ct)
    body = ct.body.copy()
    sim.pairing(site).mask_body(body, participants, PARAMS)
    sim.uploads[site] = to_bytes(Ciphertext(ct.header, ct.seeds, body))


def _answers(sim: SparseRound, survivors, dropped, answering):
    return {site: answer_unmasking(sim.context, site, sim.received[site], survivors, dropped,
                                   graph=sim.pairing(site).graph) for site in sorted(answering)}


def test_every_party_draws_the_same_k_regular_graph_from_the_key_set():
    sim = _share(_context())
    graphs = [sim.pairing(site).graph for site in SITES] + [sim.graph]
    assert all(graph == graphs[0] for graph in graphs)
    graph = graphs[0]
    assert sorted(graph.order) == list(SITES)
    for site in SITES:
        neighbours = graph.neighbours(site)
        assert len(neighbours) == K and site not in neighbours
        assert all(site in graph.neighbours(peer) for peer in neighbours)  # symmetric
        assert graph.holders(site) == neighbours | {site}
        assert sim.sent[site] == graph.holders(site)  # shares only to its holders
    # Another round gives another ring (the order is drawn, not by name).
    orders = {round_graph(MaskingRound("fed", SECRET.key_id, number, SITES, T, K)).order
              for number in range(1, 5)} | {graph.order}
    assert len(orders) > 1
    # The complete graph: k = 0, every site the neighbour of every other, shares to all.
    complete = _share(_context(k=0, t=5))
    assert complete.graph.is_complete
    assert all(complete.sent[site] == set(SITES) for site in SITES)


def test_k_and_t_are_bound_into_the_key_set_digest_so_sites_cannot_be_shown_different_ones():
    sim = _share(_context())
    digest = key_set_digest(sim.context, sim.advertised)
    for other in (_context(k=2, t=2), _context(k=4, t=4), _context(k=0, t=3)):
        assert key_set_digest(other, sim.advertised) != digest
    sealed = sim.pairing(SITES[0]).share_messages()
    recipient = sorted(set(sealed) - {SITES[0]})[0]
    shown_other_k = IDENTITIES.pairing(_context(k=6), recipient, sim.keys[recipient],
                                       sim.advertised)
    with pytest.raises(MaskingError, match="do not open"):
        shown_other_k.open_from(SITES[0], sealed[recipient])
    # The complete graph binds t too: a site shown a lower t cannot open the others' pairs.
    complete = _share(_context(k=0, t=5))
    assert key_set_digest(_context(k=0, t=4), complete.advertised) != key_set_digest(
        complete.context, complete.advertised)
    sealed = complete.pairing(SITES[0]).share_messages()
    shown_lower_t = IDENTITIES.pairing(_context(k=0, t=4), SITES[1], complete.keys[SITES[1]],
                                       complete.advertised)
    with pytest.raises(MaskingError, match="do not open"):
        shown_lower_t.open_from(SITES[0], sealed[SITES[1]])


def test_a_colluding_site_cannot_redraw_the_graph_by_choosing_its_round_keys():
    # The attack a graph drawn from the advertised keys allowed: a site allied with the
    # central side, shown the honest sites' keys first, tries fresh keys of its own until the
    # graph puts its allies around a victim. Each try changes the key set (and its digest), as
    # the victim sees it; none changes the victim's graph.
    sim = _share(_context())
    ally, victim = SITES[0], SITES[5]
    digests, orders = set(), set()
    for _ in range(32):
        advertised = dict(sim.advertised)
        advertised[ally] = IDENTITIES.advertise(ally, generate_round_keys())
        digests.add(key_set_digest(sim.context, advertised))
        orders.add(IDENTITIES.pairing(sim.context, victim, sim.keys[victim],
                                      advertised).graph.order)
    assert len(digests) == 32, "the share pairs stay bound to every key"
    assert orders == {sim.graph.order}
    # What does draw it: the names in the key set (the central side's only choice: which
    # advertised sites enter), and the round.
    assert round_graph(_context(sites=SITES[1:])).order != tuple(
        site for site in sim.graph.order if site != SITES[0])


@pytest.mark.parametrize(("before_upload", "after_upload"), [
    ((), ()),
    (("site-1", "site-6"), ()),      # dropped after sharing keys, before uploading
    (("site-3",), ("site-0",)),      # one before, one after its ciphertext was sent
    ((), ("site-2", "site-5")),      # both after sending their ciphertexts
])
def test_the_sparse_unmasked_sum_is_the_shared_key_sum_byte_for_byte(before_upload,
                                                                     after_upload):
    """With k = 4 and t = 3, any two dropouts leave each neighbourhood t answering holders."""
    sim = _share(_context())
    survivors = set(SITES) - set(before_upload)
    dropped = set(before_upload)
    for site in sorted(survivors):
        _upload(sim, site)
    answering = survivors - set(after_upload)
    answers = _answers(sim, survivors, dropped, answering)
    for site, answer in answers.items():  # only the shares of its own neighbourhood
        assert set(answer.self_seeds) == sim.graph.holders(site) & survivors
        assert set(answer.mask_keys) == sim.graph.neighbours(site) & dropped
    secrets = recover_round_secrets(sim.context, answers, survivors, dropped, sim.advertised)
    summed = from_bytes(to_bytes(add([from_bytes(sim.uploads[s]) for s in sorted(survivors)])))
    body = summed.body.copy()
    terms = unmasking_terms(sim.context, secrets, sim.advertised, survivors)
    unmask_sum(body, terms, PARAMS)
    sealed = Ciphertext(summed.header, summed.seeds, body)
    shared_key_sum = add([from_bytes(sim.unmasked[s]) for s in sorted(survivors)])
    assert to_bytes(sealed) == to_bytes(shared_key_sum)
    slots = decrypt(SECRET, sealed)
    assert np.array_equal(slots, np.sum([sim.plain[s] for s in survivors], axis=0))
    check = SumCheck(SECRET, ROUND, sorted(survivors))
    check.add(0, slots[:VALUES + 1])
    check.verify(slots[VALUES + 1:])
    # One pairwise term per (survivor, dropped neighbour), not per (survivor, dropped).
    expected = len(survivors) + sum(len(sim.graph.neighbours(d) & survivors) for d in dropped)
    assert len(terms) == expected


def test_a_neighbourhood_short_of_t_survivors_stops_the_unmasking_by_name():
    sim = _share(_context())
    victim = SITES[0]
    gone = sorted(sim.graph.neighbours(victim))[:3]  # 3 of its 4 neighbours drop
    survivors, dropped = set(SITES) - set(gone), set(gone)
    short = short_neighbourhoods(sim.graph, T, survivors, dropped, survivors)
    assert short[victim] == 2  # itself and its one neighbour left
    answers = _answers(sim, survivors, dropped, survivors)
    with pytest.raises(MaskingError, match=f"cannot be unmasked.*{victim} \\(2 of t = 3\\)"):
        recover_round_secrets(sim.context, answers, survivors, dropped, sim.advertised)


def test_a_coalition_with_t_minus_1_of_a_victims_neighbours_cannot_read_its_update():
    """The coalition holds the LWE secret, its members' round keys and received shares, every
    advertisement, upload and (honest, no dropout) unmasking answer, so every survivor's
    self-mask seed; it tries every mask it can compute, with both signs, on the victim's
    upload. The victim's pairwise masks with its honest neighbours stay unknown."""
    sim = _share(_context())
    for site in SITES:
        _upload(sim, site)
    victim = SITES[0]
    neighbours = sorted(sim.graph.neighbours(victim))
    coalition = neighbours[:T - 1]
    honest = [n for n in neighbours if n not in coalition]
    answers = _answers(sim, set(SITES), set(), set(SITES))
    secrets = recover_round_secrets(sim.context, answers, set(SITES), set(), sim.advertised)
    shares = {sim.context.holder(c): sim.received[c][victim].mask_key for c in coalition}
    with pytest.raises(SharingError):
        recover_secret(shares, T)
    for peer in honest:  # nor the mask key of an honest neighbour of the victim
        held = [c for c in coalition if peer in sim.received[c]]
        assert len(held) < T
    known = [secrets.self_seeds[victim]] + [
        pairwise_seed(sim.context, sim.keys[c].mask_key, sim.advertised[victim].mask_public,
                      c, victim) for c in coalition]
    assert _best_plausible(sim, victim, known) < 0.01
    # Control: with the honest neighbours' pairwise seeds too, the same search reads it.
    missing = [pairwise_seed(sim.context, sim.keys[h].mask_key,
                             sim.advertised[victim].mask_public, h, victim) for h in honest]
    assert _best_plausible(sim, victim, known + missing, up_to=len(known) + 2) == 1.0


def _best_plausible(sim: SparseRound, target: str, seeds: list[bytes], up_to: int = 3
                    ) -> float:
    """Best fraction of plausible value slots over the target's upload decrypted with the LWE
    secret after removing every subset of up to `up_to` known masks, each with either sign
    (1.0: the update itself)."""
    limit = 10 * CODEC.bound * 2 ** CODEC.frac_bits
    best = 0.0
    for slots in strip_known_masks(from_bytes(sim.uploads[target]), SECRET, seeds, up_to):
        if np.array_equal(slots, sim.plain[target]):
            return 1.0
        best = max(best, float(np.mean(np.abs(slots[:VALUES]) <= limit)))
    return best


def test_choose_neighbours_gives_a_sparse_graph_for_large_federations_only():
    assert choose_neighbours(3) == (0, 2) and choose_neighbours(5) == (0, 3)  # complete
    for n in (100, 1000):
        k, t = choose_neighbours(n)
        assert 0 < k < n - 1 and k % 2 == 0 and k // 2 < t <= k + 1
    assert choose_neighbours(1000)[0] < choose_neighbours(100)[0] * 3  # O(log n)-ish, not O(n)
    # More corruption tolerated needs more neighbours.
    assert choose_neighbours(300, corrupt=0.1)[0] < choose_neighbours(300, corrupt=0.3)[0]
    with pytest.raises(MaskingError, match="at least 2 sites"):
        choose_neighbours(1)
    with pytest.raises(MaskingError, match="fractions"):
        choose_neighbours(100, corrupt=0.6)


@pytest.mark.parametrize(("k", "t", "message"), [
    (3, 2, "even degree in 2..6, got 3"),
    (8, 3, "even degree in 2..6, got 8"),
    (4, 6, "threshold 6 must be in 2..5 \\(the holders"),
    (4, 1, "threshold 1 must be in 2..5"),
])
def test_a_sparse_round_with_bad_k_or_t_is_refused_with_what_is_accepted(k, t, message):
    with pytest.raises(MaskingError, match=message):
        _context(k=k, t=t)


def test_a_sparse_answer_without_its_graph_is_refused():
    sim = _share(_context())
    with pytest.raises(MaskingError, match="sparse neighbour graph: an answer needs it"):
        answer_unmasking(sim.context, SITES[0], sim.received[SITES[0]], set(SITES), set())


def test_a_site_outside_the_key_set_has_no_neighbours():
    graph = NeighbourGraph.complete(SITES)
    with pytest.raises(MaskingError, match="not in the round's key set"):
        graph.neighbours("elsewhere")
