"""The neighbour graph and the secret-sharing threshold of SecAgg+.

Bell et al. ("Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020, §3)
replace Bonawitz et al.'s complete graph by a sparse random graph: each client masks with, and
shares its secrets among, only its ``k`` neighbours, so a client's work grows with ``log n``
instead of ``n``. We use a ``k``-regular graph: the Harary graph (the circulant graph in which
position ``i`` links to positions ``i ± 1 … i ± k/2``) over a uniformly random permutation of
the cohort, so each client's neighbourhood is a uniform ``k``-subset of the others.

:func:`choose_parameters` picks the smallest even ``k`` and a threshold ``t`` meeting Bell et al.'s
three conditions on the graph (§3; they state them for their random graphs, and we bound them
for the permuted Harary graph ourselves, as derived in ``docs/secure-aggregation.md``), for
``n`` clients of which at most ``D = ⌈δn⌉`` drop out and at most ``C = ⌈γn⌉`` are corrupt
and collude with the server:

1. correctness, ``P ≤ 2^-η``: every client keeps at least ``t`` live neighbours to answer for it;
2. privacy, ``P ≤ 2^-σ``: no honest client has ``t`` or more corrupt neighbours;
3. privacy, ``P ≤ 2^-σ``: the honest survivors stay connected, so the server learns only their
   total, not partial sums.

When no ``k < n - 1`` works the complete graph is used (Bonawitz et al.); that is the usual case
for small cohorts. With ``σ = 40`` and ``η = 20`` as in Bell et al.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from fedloom.core import validate


@dataclass(frozen=True)
class GraphParameters:
    """A cohort's neighbour degree ``k`` (``n - 1``: the complete graph) and threshold ``t``,
    with the bounds on failure they meet (log2 of the probability)."""

    clients: int
    degree: int
    threshold: int
    log2_privacy_failure: float
    log2_correctness_failure: float

    @property
    def complete(self) -> bool:
        return self.degree == self.clients - 1


def choose_parameters(
    clients: int,
    *,
    dropout_rate: float,
    corrupt_fraction: float,
    privacy_bits: float = 40.0,
    correctness_bits: float = 20.0,
    complete_up_to: int = 50,
) -> GraphParameters:
    """The sparsest graph and its threshold for which both failure bounds hold; ValueError,
    naming the numbers, when even the complete graph cannot meet them.

    Cohorts of at most ``complete_up_to`` clients always use the complete graph: it costs
    little there, and its privacy does not rest on the dropout bound (no set of dropouts
    disconnects it).
    """
    validate.positive_int("clients", clients, minimum=2)
    validate.in_range("dropout_rate", dropout_rate, 0.0, 1.0, high_open=True)
    validate.in_range("corrupt_fraction", corrupt_fraction, 0.0, 1.0, high_open=True)
    n = clients
    dropped = math.ceil(dropout_rate * n - 1e-9)
    corrupt = math.ceil(corrupt_fraction * n - 1e-9)
    validate.positive_int("complete_up_to", complete_up_to, minimum=0)
    degrees = [*range(2, n - 1, 2), n - 1] if n > max(2, complete_up_to) else [n - 1]
    for k in degrees:
        complete = k == n - 1
        connect = -math.inf if complete else log2_disconnected(n, k, dropped + corrupt)
        if connect > -privacy_bits:
            continue
        # t > k/2 as well: the server can never collect t shares of both of a client's secrets
        # from honest neighbours (Bell et al. §4, the malicious-server condition), which costs
        # nothing here and keeps the protocol right if the model is strengthened later.
        for t in range(k // 2 + 1, k + 2):
            privacy = _log2_add(connect, log2_union(n, n - 1, corrupt, k, at_least=t))
            correct = log2_union(n, n - 1, dropped, k, at_least=k - t + 1)
            if privacy <= -privacy_bits and correct <= -correctness_bits:
                return GraphParameters(n, k, t, privacy, correct)
            if privacy <= -privacy_bits and correct > -correctness_bits:
                break  # a larger t only hurts correctness
    raise ValueError(
        f"no neighbour graph over {n} clients tolerates dropout_rate={dropout_rate} "
        f"({dropped} clients) with corrupt_fraction={corrupt_fraction} ({corrupt} clients) at "
        f"2^-{privacy_bits:g} privacy and 2^-{correctness_bits:g} correctness failure; lower "
        "either fraction or sample a larger cohort"
    )


def harary(clients: int, degree: int, seed: bytes | None = None) -> list[frozenset[int]]:
    """Neighbour sets (positions ``0 … clients-1``) of a randomly permuted Harary graph
    ``H(degree, clients)``; the complete graph when ``degree == clients - 1``."""
    validate.positive_int("clients", clients, minimum=2)
    if degree == clients - 1:
        return [frozenset(j for j in range(clients) if j != i) for i in range(clients)]
    if degree % 2 or not 2 <= degree < clients - 1:
        raise ValueError(
            f"degree must be even and in [2, {clients - 2}], or {clients - 1} (complete), "
            f"got {degree}"
        )
    rng = np.random.default_rng(np.frombuffer(seed or os.urandom(32), dtype=np.uint32))
    order = rng.permutation(clients)
    neighbours: list[set[int]] = [set() for _ in range(clients)]
    for position, node in enumerate(order):
        for step in range(1, degree // 2 + 1):
            other = int(order[(position + step) % clients])
            neighbours[int(node)].add(other)
            neighbours[other].add(int(node))
    return [frozenset(s) for s in neighbours]


def log2_union(events: int, population: int, marked: int, draws: int, *, at_least: int) -> float:
    """log2 of the union bound ``events · P[X ≥ at_least]`` for ``X ~ Hypergeometric(population,
    marked, draws)``: the chance that some client's ``draws`` neighbours hold ``at_least`` of the
    ``marked`` (corrupt, or dropped) clients."""
    tail = _hypergeometric_tail(population, min(marked, population), draws, at_least)
    return -math.inf if tail == 0 else math.log2(events) + math.log2(tail)


def log2_disconnected(clients: int, degree: int, removed: int) -> float:
    """log2 of a bound on P[the Harary graph minus ``removed`` random nodes is disconnected].

    Removing nodes from the circulant graph leaves it connected unless two separate runs of at
    least ``degree/2`` consecutive positions are removed, since an edge spans at most
    ``degree/2`` positions. So P ≤ min(n · q(k/2), n² · q(k)) with
    ``q(r) = Π_{i<r} (removed − i) / (n − i)`` the chance that ``r`` given positions are all
    removed.
    """
    n, half = clients, degree // 2

    def log2_all_removed(r: int) -> float:
        if r > removed:
            return -math.inf
        return sum(math.log2((removed - i) / (n - i)) for i in range(r))

    return min(math.log2(n) + log2_all_removed(half), 2 * math.log2(n) + log2_all_removed(degree))


def _log2_add(a: float, b: float) -> float:
    """log2(2^a + 2^b): the union bound of two failure events."""
    high, low = max(a, b), min(a, b)
    return high if low == -math.inf else high + math.log2(1 + 2 ** (low - high))


def _hypergeometric_tail(population: int, marked: int, draws: int, at_least: int) -> float:
    low = max(at_least, 0)
    high = min(marked, draws)
    if low > high:
        return 0.0
    total = _log_comb(population, draws)
    return math.fsum(
        math.exp(_log_comb(marked, x) + _log_comb(population - marked, draws - x) - total)
        for x in range(low, high + 1)
        if draws - x <= population - marked
    )


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
