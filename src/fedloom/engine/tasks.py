"""The one interface between the engine and wherever clients run.

The engine hands a list of tasks to :meth:`Executor.run` and gets one reply per task, in order.
In one process that is a plain loop; in the simulator a batched computation or a pool; in a
deployment, gRPC calls. A client that fails answers with :class:`Failure` rather than raising,
so one client's crash never costs the others their round.

An executor may also offer ``run_each(tasks, consume)`` (:class:`StreamingExecutor`): it calls
``consume(position, reply)`` once per task as each reply arrives, so the engine can fold an
update into its running sum and drop it before the next arrives. :func:`run_each` calls it, or
falls back on :meth:`Executor.run` for executors that have only that (the simulators).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

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


Consume = Callable[[int, Reply], None]
"""Called with a task's position in the list given and its reply."""


@runtime_checkable
class StreamingExecutor(Executor, Protocol):
    """An executor that hands each reply over as it arrives.

    ``run_each(tasks, consume)`` calls ``consume(position, reply)`` exactly once per task, in
    the order the replies complete, from the caller's thread, and returns when every task is
    answered; the replies are those ``run`` would return. An exception ``consume`` raises
    propagates out of ``run_each``.
    """

    def run_each(self, tasks: Sequence[Task], consume: Consume) -> None: ...


def run_each(executor: Executor, tasks: Sequence[Task], consume: Consume) -> None:
    """``executor.run_each(tasks, consume)`` where it has one; otherwise ``executor.run(tasks)``
    with ``consume`` called on each reply in the tasks' order."""
    if isinstance(executor, StreamingExecutor):
        executor.run_each(tasks, consume)
        return
    replies = executor.run(tasks)
    if len(replies) != len(tasks):
        raise RuntimeError(
            f"{type(executor).__name__}.run answered {len(replies)} of {len(tasks)} tasks"
        )
    for position, reply in enumerate(replies):
        consume(position, reply)
