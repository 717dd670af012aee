"""The client side of secure aggregation: one protocol session per client.

An executor that simulates clients keeps each client's :class:`~fedloom.secagg.client.ClientSession`
here between the protocol's rounds; a deployed site (:mod:`fedloom.transport.secure_site`) keeps
its one session here too, so simulators and real sites run the same client code. Training
for round 0 goes through the executor's ordinary training path (batched, in the vectorized
executor), and the trained update goes straight into the client's session: it never leaves the
client side unmasked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fedloom.core.messages import ClientResult
from fedloom.engine.secure_rounds import SecureTaskKind
from fedloom.engine.tasks import Failure, Reply, Task, TrainTask
from fedloom.secagg.client import ClientSession, ProtocolAbort
from fedloom.secagg.messages import (
    KeyRoster,
    MaskingRequest,
    SecureReply,
    SecureTask,
    SecureTrainTask,
    UnmaskRequest,
)


class SecureClients:
    """Every simulated client's SecAgg+ session of the current round."""

    def __init__(self) -> None:
        self.sessions: dict[int, ClientSession] = {}

    def run(
        self, tasks: Sequence[SecureTaskKind], train: Callable[[Sequence[Task]], list[Reply]]
    ) -> list[SecureReply | Failure]:
        """One reply per task, in order; ``train`` runs the round-0 training tasks."""
        replies: list[SecureReply | Failure | None] = [None] * len(tasks)
        training = [(p, t) for p, t in enumerate(tasks) if isinstance(t, SecureTrainTask)]
        if training:
            # A new round: sessions left by an earlier round that aborted are dead.
            current = {t.setup.round for _, t in training}
            self.sessions = {c: s for c, s in self.sessions.items() if s.setup.round in current}
        trained = train([TrainTask(t.client, t.broadcast) for _, t in training]) if training else []
        for (position, start), result in zip(training, trained, strict=True):
            replies[position] = self._start(start, result)
        for position, task in enumerate(tasks):
            if isinstance(task, SecureTask):
                replies[position] = self._step(task)
        assert all(r is not None for r in replies)
        return [r for r in replies if r is not None]

    def _start(self, task: SecureTrainTask, result: Reply) -> SecureReply | Failure:
        self.sessions.pop(task.client, None)
        if isinstance(result, Failure):
            return result
        if not isinstance(result, ClientResult):
            return Failure(f"training answered with a {type(result).__name__}")
        try:
            # Stochastic rounding draws from its own stream, apart from training's and stages'.
            rng = np.random.default_rng([task.broadcast.seed, 2])
            session = ClientSession.start(task.client, task.setup, result, rng)
            reply = session.advertise()
        except (ProtocolAbort, ValueError) as error:
            return Failure(str(error))
        self.sessions[task.client] = session
        return reply

    def _step(self, task: SecureTask) -> SecureReply | Failure:
        session = self.sessions.get(task.client)
        if session is None:
            return Failure(f"client {task.client} has no secure aggregation session this round")
        request = task.request
        try:
            if isinstance(request, KeyRoster):
                return session.share_keys(request)
            if isinstance(request, MaskingRequest):
                return session.mask(request)
            if isinstance(request, UnmaskRequest):
                self.sessions.pop(task.client)
                return session.unmask(request)
            return Failure(f"unknown secure aggregation request {type(request).__name__}")
        except ProtocolAbort as error:
            self.sessions.pop(task.client, None)
            return Failure(str(error))
