"""SecAgg+'s sparse neighbour graph (Bell et al., "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead", CCS 2020): with it a site pairs its masks with, and shares its
round secrets among, k neighbours of the round's key set instead of all n - 1 other sites.

The graph is a Harary graph H(k, n) over a pseudo-random order of the key set, as in Bell et
al.: the sites sit on a ring in that order and each is linked to the k/2 sites either side of
it, so every site has exactly k neighbours and a site's neighbourhood is a uniformly random
k-subset of the other sites. The order comes from an HKDF expansion of the round's binding
(federation, LWE key id, round, the names in the key set, k and t), not from the sites' round
keys: every site and the aggregator compute the same graph from what they already check, and
no party can re-draw it by choosing its keys (a site colluding with the central side, shown
the honest sites' keys first, could otherwise try fresh keys of its own until the graph put its
allies around a victim). What the central side still chooses is which advertised sites enter
the key set (docs/security.md, "Sparse neighbour graph").

A site's shares go to its holders: its neighbours and itself (k + 1 holders, x coordinate by
key-set position), any t of which recover its secrets. k = 0, or k >= n - 1, is the complete
graph: every site is every other's neighbour, which is the protocol before this module.

`choose_neighbours` is Bell et al.'s parameter choice made exact for this graph: the least
even k, and a t, such that (union bound over the n sites) no site has t - 1 corrupt neighbours
with probability at least 1 - 2^-40, and every site keeps t holders through the dropouts with
probability at least 1 - 2^-20, for a corrupt fraction and a dropout rate of 1/5 each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from math import comb

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ucadi.lwe.mask_round import MaskingError, MaskingRound

GRAPH_DOMAIN = b"ucadi/lwe/mask-graph/v2"
# Bell et al.'s assumptions for "auto": the fraction of a key set that may collude with the
# central side, and that may drop out of a round; the failure probabilities accepted.
CORRUPT_FRACTION = 0.2
DROPOUT_FRACTION = 0.2
PRIVACY_BITS = 40
CORRECTNESS_BITS = 20


@dataclass(frozen=True)
class NeighbourGraph:
    """A round's neighbour graph: `order` is the ring, each site linked to the `degree` / 2
    sites either side of it (every other site when the graph is complete)."""

    order: tuple[str, ...]
    degree: int

    @classmethod
    def complete(cls, sites: Iterable[str]) -> NeighbourGraph:
        """Every site the neighbour of every other (the protocol without a sparse graph)."""
        order = tuple(sorted(sites))
        return cls(order, len(order) - 1)

    @property
    def is_complete(self) -> bool:
        return self.degree >= len(self.order) - 1

    def neighbours(self, site: str) -> frozenset[str]:
        """The sites `site` pairs its masks with."""
        try:
            position = self.order.index(site)
        except ValueError:
            raise MaskingError(f"{site!r} is not in the round's key set") from None
        if self.is_complete:
            return frozenset(self.order) - {site}
        n = len(self.order)
        return frozenset(self.order[(position + step) % n]
                         for half in range(1, self.degree // 2 + 1) for step in (half, -half))

    def holders(self, site: str) -> frozenset[str]:
        """The sites that hold shares of `site`'s secrets: its neighbours and itself."""
        return self.neighbours(site) | {site}


def round_graph(context: MaskingRound) -> NeighbourGraph:
    """The round's graph: complete when context.neighbours is 0, else H(k, n) over an order
    drawn from the round's binding, the key set's names, k and t (identical at every party
    that holds the same key set; independent of the keys the sites advertised)."""
    if context.neighbours == 0:
        return NeighbourGraph.complete(context.sites)
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=context.binding(GRAPH_DOMAIN)).derive(
        context.binding(GRAPH_DOMAIN, *context.sites) + context.neighbours.to_bytes(4, "big")
        + context.threshold.to_bytes(4, "big"))
    return NeighbourGraph(_shuffled(context.sites, seed), context.neighbours)


def _shuffled(sites: tuple[str, ...], seed: bytes) -> tuple[str, ...]:
    """Fisher-Yates over `sites` with uniform draws from SHA-256(seed, counter) (rejection
    sampling: no modulo bias)."""
    order = list(sites)
    counter = 0

    def below(bound: int) -> int:
        nonlocal counter
        limit = (1 << 64) - (1 << 64) % bound
        while True:
            block = hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
            value = int.from_bytes(block[:8], "big")
            if value < limit:
                return value % bound

    for i in range(len(order) - 1, 0, -1):
        j = below(i + 1)
        order[i], order[j] = order[j], order[i]
    return tuple(order)


def short_neighbourhoods(graph: NeighbourGraph, threshold: int, survivors: Iterable[str],
                         dropped: Iterable[str], answering: Iterable[str]) -> dict[str, int]:
    """The sites whose secrets unmasking needs but cannot recover: each survivor's self-mask
    seed needs t answering holders, each dropped site's mask key t answering neighbours.
    Site -> answering holders it has, for those short of t (empty: unmasking can go on)."""
    answering = frozenset(answering)
    short = {}
    for site in sorted(survivors):
        have = len(graph.holders(site) & answering)
        if have < threshold:
            short[site] = have
    for site in sorted(dropped):
        have = len(graph.neighbours(site) & answering)
        if have < threshold:
            short[site] = have
    return short


def describe_short(short: Mapping[str, int], threshold: int) -> str:
    """'north (2 of t = 3), ...': for the log lines and errors that name them."""
    return ", ".join(f"{site} ({have} of t = {threshold})" for site, have in short.items())


def _tail(population: int, marked: int, draws: int, at_least: int) -> float:
    """P[X >= at_least] for X hypergeometric: `draws` of `population`, `marked` of them marked."""
    total = sum(comb(marked, i) * comb(population - marked, draws - i)
                for i in range(max(at_least, 0), min(marked, draws) + 1))
    return total / comb(population, draws)


@cache
def choose_neighbours(site_count: int, corrupt: float = CORRUPT_FRACTION,
                      dropout: float = DROPOUT_FRACTION, privacy_bits: int = PRIVACY_BITS,
                      correctness_bits: int = CORRECTNESS_BITS) -> tuple[int, int]:
    """(k, t) for a key set of `site_count` sites: the least even k with a majority t of the
    k + 1 holders such that, over the n sites (union bound),
    - privacy: some site has t - 1 or more corrupt neighbours (with its own answer, t shares:
      a central side that declares that site's honest neighbours dropped could unmask it)
      with probability <= 2^-privacy_bits, floor(corrupt * n) sites corrupt;
    - correctness: some site has more than k - t dropped neighbours (a dropped site would keep
      fewer than t answering neighbours) with probability <= 2^-correctness_bits,
      floor(dropout * n) sites dropped.
    (0, majority of n) when no k below n - 1 does: the complete graph."""
    if site_count < 2:
        raise MaskingError(f"a masked round needs at least 2 sites, got {site_count}")
    if not (0 <= corrupt < 0.5 and 0 <= dropout < 0.5):
        raise MaskingError("corrupt and dropout fractions must be in [0, 0.5)")
    others = site_count - 1
    bad, gone = int(corrupt * site_count), int(dropout * site_count)
    privacy, correctness = 2.0 ** -privacy_bits, 2.0 ** -correctness_bits
    for k in range(2, site_count - 1, 2):
        for t in range(k // 2 + 1, k + 2):
            if site_count * _tail(others, bad, k, t - 1) > privacy:
                continue
            if site_count * _tail(others, gone, k, k - t + 1) <= correctness:
                return k, t
            break  # a larger t only loses correctness
    return 0, site_count // 2 + 1
