"""Drives the SecAgg+ client and server state machines directly, one honest client per id,
with chosen clients vanishing in chosen rounds: the protocol without an engine or executor."""

from __future__ import annotations

from collections.abc import Mapping, Set

import numpy as np

from fedloom.secagg import ClientSession, SecureAggregationAborted, ServerSession
from fedloom.secagg.graph import choose_parameters
from fedloom.secagg.messages import Setup
from fedloom.secagg.primitives import RingVector


def make_setup(
    clients: int, dims: int, *, dropout_rate: float = 0.1, bits: int = 32, first: int = 100
) -> Setup:
    graph = choose_parameters(clients, dropout_rate=dropout_rate, corrupt_fraction=0.05)
    return Setup(
        round=0,
        cohort=tuple(range(first, first + clients)),
        degree=graph.degree,
        threshold=graph.threshold,
        bits=bits,
        scale=1.0,
        clip=1.0,
        max_weight=1,
        weighted=False,
        dims=dims,
    )


def random_inputs(setup: Setup, seed: int = 0) -> dict[int, RingVector]:
    rng = np.random.default_rng(seed)
    return {
        c: rng.integers(0, 1 << setup.bits, setup.dims + 1, dtype=np.uint64).astype(np.uint32)
        for c in setup.cohort
    }


def run_protocol(
    setup: Setup, inputs: Mapping[int, RingVector], vanish: Mapping[str, Set[int]]
) -> tuple[RingVector | None, str | None, ServerSession]:
    """``(sum, None, server)`` or ``(None, reason, server)`` if the server aborted; a client in
    ``vanish[phase]`` sends nothing from that round on."""
    clients = {c: ClientSession(c, setup, inputs[c]) for c in setup.cohort}
    server = ServerSession(setup)
    gone: set[int] = set()

    def alive(phase: str, asked: Mapping[int, object]) -> list[int]:
        gone.update(vanish.get(phase, ()))
        return [c for c in asked if c not in gone]

    try:
        everyone = dict.fromkeys(setup.cohort)
        rosters = server.roster({c: clients[c].advertise() for c in alive("advertise", everyone)})
        shares = {c: clients[c].share_keys(rosters[c]) for c in alive("share", rosters)}
        requests = server.forward(shares)
        masked = {c: clients[c].mask(requests[c]) for c in alive("mask", requests)}
        unmask = server.unmask_requests(masked)
        answers = {c: clients[c].unmask(unmask[c]) for c in alive("unmask", unmask)}
        return server.finish(answers), None, server
    except SecureAggregationAborted as error:
        return None, error.reason, server


def plain_sum(setup: Setup, inputs: Mapping[int, RingVector], clients: Set[int]) -> RingVector:
    total = np.zeros(setup.dims + 1, dtype=np.uint64)
    for c in clients:
        total += inputs[c]
    return (total % (1 << setup.bits)).astype(np.uint32)
