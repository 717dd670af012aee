"""What travels on the wire each round, and how many bytes it takes.

The server encodes the model once per round with the algorithm's broadcast codec, and every
client of the cohort starts from its decoding (with a delta broadcast, each client is sent the
chain from the model it holds, :mod:`fedloom.engine.delta`); a client whose pipeline ends in a
codec stage sends its update as that stage's payload, which the server decodes per client
before reducing. Byte counts come from the payloads themselves (plus float32 for vectors sent as
they are), so a transport that sends the same payloads moves the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from fedloom.algorithms import Algorithm
from fedloom.core.layout import Vector
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine.delta import (
    DeltaState,
    HeldModels,
    advance,
    chain_from,
    held_rounds,
    synced,
)
from fedloom.engine.tasks import Failure, Reply
from fedloom.stages import Encoding


def encode_broadcast(
    algorithm: Algorithm, params: Vector, seed: int, round_: int
) -> tuple[Vector, bytes | None]:
    """The model the cohort starts from and its encoding (None when sent as float32)."""
    if algorithm.broadcast is None:
        return params, None
    rng = np.random.default_rng([seed, round_, 2])
    payload = algorithm.broadcast.encode(params, rng)
    sent = algorithm.broadcast.decode(payload, params.shape[0])
    sent.flags.writeable = False
    return sent, payload


Send = tuple[bytes | None, int | None]
"""What one client is sent for the model: a payload (None: the model as float32) and, for a
delta broadcast's chain, the round the chain starts from."""


def broadcast_models(
    algorithm: Algorithm,
    delta: DeltaState | None,
    params: Vector,
    cohort: Sequence[int],
    *,
    seed: int,
    round_: int,
    executor: object = None,
) -> tuple[Vector, list[Send], DeltaState | None]:
    """The model the cohort starts from, what each of its clients is sent, and the delta
    broadcast's next state (None without one).

    Without a delta broadcast every client is sent the same payload (:func:`encode_broadcast`).
    With one, the public model steps forward by this round's link and each client is sent a
    chain from the round it holds, or the public model whole (:mod:`fedloom.engine.delta`);
    an executor whose clients report what they hold (:class:`~fedloom.engine.delta.HeldModels`)
    is believed over the server's own record, once their digests check out."""
    if algorithm.broadcast_window is None:
        sent, payload = encode_broadcast(algorithm, params, seed, round_)
        return sent, [(payload, None)] * len(cohort), None
    state = step_public_model(algorithm, delta, params, seed=seed, round_=round_)
    reports = executor.held_models(cohort) if isinstance(executor, HeldModels) else None
    held = held_rounds(state, reports)
    return state.public, [send_to(state, held.get(client)) for client in cohort], state


def step_public_model(
    algorithm: Algorithm, delta: DeltaState | None, params: Vector, *, seed: int, round_: int
) -> DeltaState:
    """A delta broadcast's state for round ``round_``: its public model one link closer to
    ``params``, the link's rounding drawn from the run's seed and the round."""
    if algorithm.broadcast is None or algorithm.broadcast_window is None:
        raise ValueError(f"algorithm {algorithm.name!r} has no delta broadcast")
    rng = np.random.default_rng([seed, round_, 2])
    return advance(
        delta,
        params,
        codec=algorithm.broadcast,
        window=algorithm.broadcast_window,
        round_=round_,
        rng=rng,
    )


def send_to(delta: DeltaState, held: int | None) -> Send:
    """What a client holding the public model of round ``held`` is sent: its chain, or the
    public model whole (``(None, None)``)."""
    chain = chain_from(delta, held, delta.public.shape[0])
    return (None, None) if chain is None else chain


def after_round(
    delta: DeltaState | None, cohort: Sequence[int], trained: Sequence[bool]
) -> DeltaState | None:
    """A delta broadcast's state once the cohort answered (``trained[i]``: client ``cohort[i]``
    sent a training result): a client that trained holds this round's public model; one that
    failed may hold anything, so it will be sent the model whole."""
    if delta is None:
        return None
    received = [c for c, ok in zip(cohort, trained, strict=True) if ok]
    failed = [c for c, ok in zip(cohort, trained, strict=True) if not ok]
    return synced(delta, received, failed)


def download_bytes(broadcast: Broadcast) -> int:
    """Bytes of the vectors in one broadcast: the model's payload (or float32) and extras."""
    model = len(broadcast.payload) if broadcast.payload is not None else broadcast.params.nbytes
    return int(model + sum(np.asarray(v).nbytes for v in broadcast.extras.values()))


def upload_bytes(reply: Reply) -> int:
    """Bytes of the vectors in one reply: the update's payload (or float32) and extras; 0 for
    anything but a training result."""
    if not isinstance(reply, ClientResult):
        return 0
    update = len(reply.payload) if reply.payload is not None else np.asarray(reply.update).nbytes
    return int(update + sum(np.asarray(v).nbytes for v in reply.extras.values()))


def wire_stage(algorithm: Algorithm) -> Encoding | None:
    """The stage whose payload a client sends: the pipeline's last, when it encodes."""
    if algorithm.stages and isinstance(algorithm.stages[-1], Encoding):
        return algorithm.stages[-1]
    return None


def decode_reply(algorithm: Algorithm, client: int, reply: Reply) -> Reply:
    """``reply`` with its payload decoded into ``update``, or a :class:`Failure` naming the client
    and what was wrong with the payload (damaged, or missing where the pipeline ends in a codec,
    or present where it does not)."""
    if not isinstance(reply, ClientResult):
        return reply
    stage = wire_stage(algorithm)
    if stage is None:
        if reply.payload is None:
            return reply
        return Failure(f"client {client} sent an encoded payload, but no codec stage ends the "
                       "pipeline to decode it")  # fmt: skip
    if reply.payload is None:
        return Failure(
            f"client {client} sent a raw update; the pipeline ends in codec stage "
            f"{stage.name!r}, which expects an encoded payload"
        )
    size = algorithm.work.model.layout.size
    try:
        update = stage.decode(reply.payload, size)
    except ValueError as error:
        return Failure(f"client {client}'s payload refused by stage {stage.name!r}: {error}")
    return replace(reply, update=update, payload=None)
