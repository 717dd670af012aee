"""The attack harness: a share of the clients runs an attack, the rest train honestly.

:class:`AttackedExecutor` wraps any executor: it runs the round's tasks as usual, then replaces
what each malicious client sends by its attack's forged update, after showing the attack the
round's honest updates (the omniscient threat model; see :mod:`fedloom.attacks.forged`). Data
poisoning (label flipping, the backdoor's triggered examples) happens before the executor is
built, on the malicious clients' training splits only; their test splits stay clean.

>>> outcome = simulate_under_attack(                          # doctest: +SKIP
...     fl.fedavg(work).with_reducer(fl.robust.median(attackers=4)), data,
...     attack=SignFlip(), fraction=0.2, rounds=10, cohort=20)
>>> outcome.history.final("test_accuracy")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from fedloom.algorithms import Algorithm
from fedloom.attacks.backdoor import Backdoor
from fedloom.attacks.forged import RoundView
from fedloom.core import validate
from fedloom.core.layout import Vector
from fedloom.core.messages import ClientResult, ClientState
from fedloom.data import ClientData, FederatedData
from fedloom.engine import Executor, History, schedule, train
from fedloom.engine.tasks import Reply, Task, TrainTask
from fedloom.executors import closing_executor, make_executor
from fedloom.simulation import held_out_evaluation


class Attack(Protocol):
    """What a malicious client does: poison its training data, forge the update it sends."""

    @property
    def name(self) -> str: ...

    def poison(self, client: ClientData, classes: int | None, seed: int) -> ClientData: ...

    def forge(self, view: RoundView, rng: np.random.Generator) -> Vector: ...


def malicious_clients(population: int, fraction: float, seed: int) -> frozenset[int]:
    """``round(fraction · population)`` client ids, drawn without replacement from ``seed``."""
    validate.positive_int("population", population)
    validate.in_range("fraction", fraction, 0.0, 1.0)
    count = round(fraction * population)
    chosen = np.random.default_rng([seed, 0xBAD]).choice(population, size=count, replace=False)
    return frozenset(int(c) for c in chosen)


class AttackedExecutor:
    """``inner``, except that the ``malicious`` clients' training replies are forged."""

    def __init__(self, inner: Executor, attack: Attack, malicious: frozenset[int], *, seed: int):
        self.inner = inner
        self.attack = attack
        self.malicious = malicious
        self.seed = seed

    @property
    def states(self) -> dict[int, ClientState]:
        """The inner executor's kept client state (for checkpoints)."""
        states: dict[int, ClientState] = getattr(self.inner, "states", {})
        return states

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        replies = self.inner.run(tasks)
        trained = {
            i: (task, reply)
            for i, (task, reply) in enumerate(zip(tasks, replies, strict=True))
            if isinstance(task, TrainTask) and isinstance(reply, ClientResult)
        }
        bad = [i for i, (task, _) in trained.items() if task.client in self.malicious]
        if not bad:
            return replies
        benign = [r.update for t, r in trained.values() if t.client not in self.malicious]
        size = len(trained[bad[0]][1].update)
        honest = np.stack(benign) if benign else np.zeros((0, size), np.float32)
        cohort = sum(isinstance(t, TrainTask) for t in tasks)
        out = list(replies)
        for i in bad:
            task, reply = trained[i]
            view = RoundView(reply.update, honest, cohort, len(bad))
            rng = np.random.default_rng([self.seed, task.broadcast.round, task.client, 0xBAD])
            out[i] = replace(reply, update=self.attack.forge(view, rng))
        return out

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()


def poisoned(
    data: FederatedData, attack: Attack, malicious: frozenset[int], seed: int
) -> list[ClientData]:
    """``data``'s clients, the malicious ones' training splits passed through ``attack.poison``."""
    return [
        attack.poison(c, data.num_classes, seed) if c.client_id in malicious else c
        for c in data.clients
    ]


@dataclass(frozen=True)
class AttackOutcome:
    """A run under attack: its history (with ``test_backdoor_accuracy`` for a backdoor) and
    which clients were malicious."""

    history: History
    malicious: frozenset[int]


def simulate_under_attack(
    algorithm: Algorithm,
    data: FederatedData,
    *,
    attack: Attack | None,
    fraction: float,
    rounds: int,
    cohort: int | float,
    seed: int = 0,
    min_cohort: int = 1,
    eval_every: int = 1,
    executor: str = "inprocess",
) -> AttackOutcome:
    """Train ``algorithm`` with ``fraction`` of ``data``'s clients running ``attack`` (none
    when ``attack`` is None: the attack-free baseline with the same seed)."""
    malicious = (
        frozenset() if attack is None else malicious_clients(len(data.clients), fraction, seed)
    )
    clients = data.clients if attack is None else poisoned(data, attack, malicious, seed)
    evaluate = held_out_evaluation(algorithm.work.model, data)
    model = algorithm.work.model
    backdoor = attack if isinstance(attack, Backdoor) else None

    def measure(params: Vector) -> Mapping[str, float]:
        metrics = dict(evaluate(params)) if evaluate is not None else {}
        if backdoor is not None and len(data.test_y):
            metrics["backdoor_accuracy"] = backdoor.accuracy(
                model, params, data.test_x, data.test_y
            )
        return metrics

    plan = schedule(rounds=rounds, cohort=cohort, seed=seed, min_cohort=min_cohort,
                    eval_every=eval_every, federated_eval=False)  # fmt: skip
    inner = make_executor(executor, algorithm.client, clients)
    with closing_executor(inner):
        run: Executor = (
            inner if attack is None else AttackedExecutor(inner, attack, malicious, seed=seed)
        )
        history = train(algorithm, run, plan, population=range(len(clients)), evaluate=measure)
    return AttackOutcome(history, malicious)
