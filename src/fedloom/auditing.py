"""What a run writes to its audit trail (:mod:`fedloom.store.audit`), from the runner.

:class:`AuditingExecutor` sits between the engine and the executor and notes, per round, the
hash of the global model each client was sent and the hash of each update that came back.
:class:`RunAuditor` turns each finished round into entries: a ``join`` the first time a client
takes part, a ``round`` entry (participants, refusals, hashes, privacy spent when a
``dp.epsilon`` metric exists) and a ``model`` provenance entry for the global model it produced.

Identities: in simulation a client is ``"client-<id>"`` (:func:`simulated_identity`); a
deployment passes its own ``identity`` function (the certificate subject of client ``id``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fedloom.core.layout import Vector
from fedloom.core.messages import ClientResult, ClientState
from fedloom.engine import Executor, RoundRecord, ServerState
from fedloom.engine.delta import HeldModels
from fedloom.engine.secure_rounds import SecureExecutor, SecureTaskKind
from fedloom.engine.tasks import Consume, Failure, Reply, Task, TrainTask, run_each
from fedloom.experiment import Experiment
from fedloom.policy import simulated_identity
from fedloom.secagg.messages import SecureReply, SecureTrainTask
from fedloom.store import AuditTrail, StoreError, code_version
from fedloom.store.audit import digest

Identity = Callable[[int], str]
PRIVACY_METRICS = ("dp.epsilon", "dp.delta")
"""Round metrics copied into the trail as privacy spent, when a stage reports them."""


def run_facts(experiment: Experiment, config: str) -> dict[str, Any]:
    """What a ``run_started`` entry records: the configuration's hash and the facts a
    compliance report needs without parsing it (algorithm, reducer, stages)."""
    return {
        "name": experiment.name,
        "config_sha256": digest(config.encode("utf-8")),
        "code_version": code_version(),
        "algorithm": experiment.algorithm.name,
        "reducer": experiment.algorithm.reducer or "recipe default",
        "attackers": experiment.algorithm.attackers,
        "stages": [stage.kind for stage in experiment.stages],
        "clients": experiment.data.clients,
        "rounds": experiment.run.rounds,
    }


def vector_hash(vector: Vector) -> str:
    """SHA-256 of a vector's float32 bytes (little-endian, as stored)."""
    return digest(np.ascontiguousarray(vector, dtype="<f4").data.cast("B"))  # hashed in place


class AuditingExecutor:
    """``inner``, noting the hash of every model sent and update received, by round."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.sent: dict[int, str] = {}
        self.received: dict[int, dict[int, str]] = {}

    @property
    def states(self) -> dict[int, ClientState]:
        """The inner executor's kept client state (checkpoints save and restore it)."""
        states: dict[int, ClientState] = getattr(self.inner, "states")  # noqa: B009
        return states

    def held_models(self, clients: Sequence[int]) -> Mapping[int, tuple[int, bytes]] | None:
        """What the inner executor's clients say they hold from a delta broadcast, if it
        knows (:class:`fedloom.engine.delta.HeldModels`)."""
        inner = self.inner
        return inner.held_models(clients) if isinstance(inner, HeldModels) else None

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        replies = self.inner.run(tasks)
        for task, reply in zip(tasks, replies, strict=True):
            self._note(task, reply)
        return replies

    def run_each(self, tasks: Sequence[Task], consume: Consume) -> None:
        """The inner executor's :func:`~fedloom.engine.tasks.run_each`, noting each reply's
        hash as it passes, so a streaming executor stays streaming behind the audit."""

        def noted(position: int, reply: Reply) -> None:
            self._note(tasks[position], reply)
            consume(position, reply)

        run_each(self.inner, tasks, noted)

    def _note(self, task: Task, reply: Reply) -> None:
        if not isinstance(task, TrainTask):
            return
        round_ = task.broadcast.round
        if round_ not in self.sent:
            self.sent[round_] = vector_hash(task.broadcast.params)
        if isinstance(reply, ClientResult):
            self.received.setdefault(round_, {})[task.client] = vector_hash(reply.update)

    def take(self, round_: int) -> tuple[str | None, dict[int, str]]:
        """The round's model hash and update hashes, forgotten once taken."""
        return self.sent.pop(round_, None), self.received.pop(round_, {})


class SecureAuditingExecutor(AuditingExecutor):
    """An :class:`AuditingExecutor` for an executor that runs secure aggregation's rounds.

    It notes the model sent; no update hash exists to note, since the server (and so its audit
    trail) only ever sees the masked sum.
    """

    def run_secure(self, tasks: Sequence[SecureTaskKind]) -> list[SecureReply | Failure]:
        inner = self.inner
        assert isinstance(inner, SecureExecutor)
        for task in tasks:
            if isinstance(task, SecureTrainTask) and task.broadcast.round not in self.sent:
                self.sent[task.broadcast.round] = vector_hash(task.broadcast.params)
        return inner.run_secure(tasks)


def auditing(inner: Executor) -> AuditingExecutor:
    """``inner`` behind an auditing executor that keeps its ability to run secure rounds."""
    if isinstance(inner, SecureExecutor):
        return SecureAuditingExecutor(inner)
    return AuditingExecutor(inner)


class RunAuditor:
    """Writes one run's events to its trail."""

    def __init__(self, trail: AuditTrail, identity: Identity = simulated_identity) -> None:
        self.trail = trail
        self.identity = identity
        self.joined = {e.payload.get("identity") for e in trail.entries() if e.kind == "join"}
        self.last_model: str | None = None
        """The hash of the newest global model entered in the trail by this auditor."""

    def check(self, *, rounds: Sequence[int], finished: bool) -> None:
        """Raise StoreError unless the trail verifies; called before a run resumes.

        A run with no entries at all was recorded by a fedloom without audit trails: it may
        resume, and its trail starts with a note saying so (``fedloom audit verify`` goes on
        reporting its unaudited rounds).
        """
        if not self.trail.entries():
            self.trail.append("note", {"unaudited_rounds": list(rounds)})
            return
        result = self.trail.verify(rounds=rounds, finished=finished)
        if not result.ok:
            raise StoreError(
                f"the audit trail of run {self.trail.run_id} fails verification: "
                f"{result.problem}; nothing was trained or written "
                f"(`fedloom audit verify {self.trail.run_id}`)"
            )

    def started(self, **facts: Any) -> None:
        """A ``run_started`` entry with ``facts`` (config hash, code version, policy…)."""
        self.trail.append("run_started", facts)

    def round(
        self, record: RoundRecord, state: ServerState, executor: AuditingExecutor | None
    ) -> None:
        """``join`` entries for newcomers, then the ``round`` and ``model`` entries.

        Without an ``executor`` (buffered training, where a server step uses updates trained
        from several model versions), the parent is the previous step's model and no update
        hashes are recorded.
        """
        if executor is not None:
            sent, received = executor.take(record.round)
        else:
            sent, received = self.last_model, {}
        for client in record.cohort:
            who = self.identity(client)
            if who not in self.joined:
                self.joined.add(who)
                self.trail.append("join", {"identity": who, "round": record.round})
        privacy = {k: record.metrics[k] for k in PRIVACY_METRICS if k in record.metrics}
        accepted = [self.identity(c) for c in record.accepted]
        self.trail.append(
            "round",
            {
                "round": record.round,
                "participants": accepted,
                "refused": [
                    {"identity": self.identity(r.client), "reason": r.reason}
                    for r in record.rejected
                ],
                "model_sent": sent,
                "updates": {self.identity(c): h for c, h in sorted(received.items())},
                "aborted": record.aborted,
                "privacy": privacy,
            },
        )
        if record.aborted is None:
            self.last_model = vector_hash(state.params)
            self.trail.append(
                "model",
                {
                    "round": record.round,
                    "hash": self.last_model,
                    "parent": sent,
                    "participants": accepted,
                },
            )

    def decision(self, kind: str, payload: Mapping[str, Any]) -> None:
        """A ``policy`` or ``refusal`` entry."""
        self.trail.append(kind, payload)

    def finished(self, status: str, stopped: str) -> None:
        """The closing ``run_finished`` entry."""
        self.trail.append("run_finished", {"status": status, "stopped": stopped})
