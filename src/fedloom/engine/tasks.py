"""The one interface between the engine and wherever clients run.

The engine hands a list of tasks to :meth:`Executor.run` and gets one reply per task, in order.
In one process that is a plain loop; in the simulator a batched computation or a pool; in a
deployment, gRPC calls. A client that fails answers with :class:`Failure` rather than raising,
so one client's crash never costs the others their round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fedloom.core.layout import Vector
from fedloom.core.messages import Broadcast, ClientResult


@dataclass(frozen=True)
class TrainTask:
    """Train client ``client`` from ``broadcast``."""

    client: int
    broadcast: Broadcast


@dataclass(frozen=True)
class EvaluateTask:
    """Evaluate ``params`` on client ``client``'s local test split."""

    client: int
    params: Vector


@dataclass(frozen=True)
class Evaluation:
    """A client's metrics on its local test split; ``num_examples`` 0 when it has none."""

    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """A client that could not complete its task, and why."""

    reason: str


Task = TrainTask | EvaluateTask
Reply = ClientResult | Evaluation | Failure


class Executor(Protocol):
    """Runs tasks on clients; one reply per task, in the order given."""

    def run(self, tasks: Sequence[Task]) -> list[Reply]: ...
