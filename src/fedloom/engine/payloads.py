"""What travels on the wire each round, and how many bytes it takes.

The server encodes the model once per round with the algorithm's broadcast codec, and every
client of the cohort starts from its decoding; a client whose pipeline ends in a codec stage
sends its update as that stage's payload, which the server decodes per client before reducing.
Byte counts come from the payloads themselves (plus float32 for vectors sent as they are), so a
transport that sends the same payloads moves the same bytes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fedloom.algorithms import Algorithm
from fedloom.core.layout import Vector
from fedloom.core.messages import Broadcast, ClientResult
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
