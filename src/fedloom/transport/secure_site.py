"""A site's side of secure aggregation: the simulators' client code behind the wire.

:class:`SecureSite` turns the server's SecAgg+ requests into the typed tasks of
:mod:`fedloom.secagg.messages` and answers them with
:class:`~fedloom.engine.secure_clients.SecureClients`, the very code the in-process,
vectorized, pool and Ray executors run for their simulated clients: round 0 trains with the
site's own program and quantizes the update into the site's
:class:`~fedloom.secagg.client.ClientSession`, so the update never leaves the site unmasked.
The session lives in the site's memory between the protocol's rounds (and across a reconnection
within the round); a site that is killed takes it along, which the protocol treats as a dropout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from fedloom.core.layout import Vector
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine.secure_clients import SecureClients
from fedloom.engine.tasks import Failure, Reply, Task, TrainTask
from fedloom.secagg.messages import SecureReply, SecureTask, SecureTrainTask
from fedloom.transport.codec import ProtocolError, stage_config_from_pb
from fedloom.transport.proto.v1 import fedloom_pb2 as pb
from fedloom.transport.secure_codec import request_from_pb, setup_from_pb

log = logging.getLogger("fedloom.site")

Request = pb.KeyRoster | pb.MaskingRequest | pb.UnmaskRequest


class SecureSite:
    """One site's secure aggregation state: the client it plays and its protocol session.

    The server names the client (its population index) in every request; a site plays one
    client for the whole run, so a request for another client is refused.
    """

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self.clients = SecureClients()
        self.client: int | None = None
        self.bits = 32
        """The current round's ring width: how this site packs its masked input."""

    def start(
        self,
        message: pb.SecureTrainTask,
        vectors: dict[str, Vector],
        train: Callable[[Broadcast], ClientResult],
        payload: bytes | None = None,
    ) -> SecureReply | Failure:
        """Round 0: train on ``vectors`` (the broadcast's; with ``payload``, the model is that
        encoding or a delta broadcast's chain), keep the quantized update, and answer with fresh
        public keys."""
        try:
            setup = setup_from_pb(message.setup, dims=self.dims)
            client = self._claim(int(message.client))
            params = vectors.pop("params", None)
            if params is None and payload is None:
                raise ProtocolError("a secure training task without a params vector")
        except ProtocolError as error:
            return self._refuse(int(message.client), str(error))
        task = message.train
        broadcast = Broadcast(
            round=int(task.round),
            params=np.zeros(0, dtype=np.float32) if params is None else params,
            seed=int(task.seed),
            extras=vectors,
            stage_config=stage_config_from_pb(task.stage_config),
            max_steps=int(task.max_steps) or None,
            payload=payload,
            delta_from=int(task.delta_from) if task.HasField("delta_from") else None,
        )

        def run(tasks: Sequence[Task]) -> list[Reply]:
            replies: list[Reply] = []
            for t in tasks:
                assert isinstance(t, TrainTask)
                try:
                    replies.append(train(t.broadcast))
                except Exception as error:
                    replies.append(Failure(f"{type(error).__name__}: {error}"))
            return replies

        self.bits = setup.bits
        (reply,) = self.clients.run([SecureTrainTask(client, broadcast, setup)], run)
        return reply

    def step(self, message: Request) -> SecureReply | Failure:
        """Rounds 1 to 3: the site's session answers the request."""
        try:
            task: SecureTask = request_from_pb(message)
            self._claim(task.client)
        except ProtocolError as error:
            return self._refuse(int(message.client), str(error))
        (reply,) = self.clients.run([task], _no_training)
        return reply

    def _claim(self, client: int) -> int:
        if self.client is not None and client != self.client:
            raise ProtocolError(
                f"the server asked this site to play client {client}; it plays client "
                f"{self.client} in this run"
            )
        self.client = client
        return client

    def _refuse(self, client: int, reason: str) -> Failure:
        """A malformed request ends this site's part in the round (its session is dropped)."""
        log.warning("secure aggregation request refused: %s", reason)
        if client == self.client:
            self.clients.sessions.pop(client, None)
        return Failure(f"malformed secure aggregation request: {reason}")


def _no_training(tasks: Sequence[Task]) -> list[Reply]:
    assert not tasks
    return []
