"""The server's side of a delta broadcast: its public model, the last rounds' links, and which
clients hold which recent public model.

Each round the server steps its public model toward the true one by one encoded link
(:mod:`fedloom.compression.chain`); every client of the cohort trains from that public model. A
client that received the public model of a round ``k`` within the last ``window`` rounds gets
the links of rounds ``k+1..r``; any other client (first contact, too long away, a failed task)
gets the public model as float32, or the chain when that is smaller. The server's memory is one
model, at most ``window`` links, ``window + 1`` digests and one integer per client seen within
the window, never a model per client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from fedloom.compression.chain import apply_links, chain_size, model_digest, pack_chain
from fedloom.compression.codec import Codec
from fedloom.core.layout import Vector


@dataclass(frozen=True)
class DeltaState:
    """A delta broadcast's state after the broadcast of round ``round``.

    ``links[i]`` is the link of round ``round - len(links) + 1 + i``; ``digests[i]`` the digest
    of the public model of round ``round - len(links) + i`` (one more than the links: the base of
    the oldest one). ``synced`` maps a client to the round of the last public model it received,
    for clients whose round is still within the window.
    """

    round: int
    public: Vector
    links: tuple[bytes, ...] = ()
    digests: tuple[bytes, ...] = ()
    synced: Mapping[int, int] = field(default_factory=dict)

    def digest(self, round_: int) -> bytes | None:
        """The digest of the public model of ``round_``, if it is within the window."""
        first = self.round - len(self.links)
        if first <= round_ <= self.round:
            return self.digests[round_ - first]
        return None


def advance(
    state: DeltaState | None,
    params: Vector,
    *,
    codec: Codec,
    window: int,
    round_: int,
    rng: np.random.Generator,
) -> DeltaState:
    """The state for round ``round_``: the public model stepped toward ``params`` by one link.

    Without a previous round's state (the run's first round, or a state from another round) the
    public model starts as ``params`` itself and every client is sent it whole."""
    if state is None or state.round != round_ - 1:
        public = np.array(params, dtype=np.float32, copy=True)
        public.flags.writeable = False
        return DeltaState(round_, public, (), (model_digest(public),), {})
    link = codec.encode(np.asarray(params, dtype=np.float32) - state.public, rng)
    public = apply_links(state.public, [link], codec)
    public.flags.writeable = False
    links = (*state.links, link)[-window:]
    digests = (*state.digests, model_digest(public))[-(len(links) + 1) :]
    oldest = round_ - len(links)
    synced = {c: k for c, k in state.synced.items() if k >= oldest}
    return DeltaState(round_, public, links, digests, synced)


def chain_from(state: DeltaState, held: int | None, entries: int) -> tuple[bytes, int] | None:
    """The chain that takes a client holding the public model of round ``held`` to this round's,
    and ``held``; None when the client must be sent the model whole (nothing held, a round
    outside the window, or a chain no smaller than the float32 model of ``entries`` values).
    A client that already holds this round's model (a site whose server restarted mid-round)
    gets a chain of no links."""
    if held is None or not state.round - len(state.links) <= held <= state.round:
        return None
    links = state.links[held - state.round + len(state.links) :]
    if chain_size(links) >= 4 * entries:
        return None
    return pack_chain(links), held


def synced(
    state: DeltaState,
    received: Iterable[int],
    failed: Iterable[int],
    *,
    round_: int | None = None,
) -> DeltaState:
    """``state`` once the clients in ``received`` hold the public model of ``round_`` (None:
    this round's) and those in ``failed`` hold a model the server can no longer vouch for."""
    table = dict(state.synced)
    for client in failed:
        table.pop(int(client), None)
    for client in received:
        table[int(client)] = state.round if round_ is None else round_
    return DeltaState(state.round, state.public, state.links, state.digests, table)


def held_rounds(
    state: DeltaState, reports: Mapping[int, tuple[int, bytes]] | None
) -> Mapping[int, int]:
    """The round each client holds: from the clients' own reports (round and digest) where the
    executor has them, each checked against the server's digest of that round's public model;
    otherwise from the server's own record."""
    if reports is None:
        return state.synced
    return {
        client: round_
        for client, (round_, digest) in reports.items()
        if state.digest(round_) == digest
    }


@runtime_checkable
class HeldModels(Protocol):
    """An executor whose clients say which public model they hold (gRPC sites do): the round
    and the digest of each one's last reconstructed broadcast. Clients that said nothing (or
    hold nothing) are absent; None when the executor has no reports at all (a wrapper around
    one that has none), and the server's own record counts."""

    def held_models(self, clients: Sequence[int]) -> Mapping[int, tuple[int, bytes]] | None: ...
