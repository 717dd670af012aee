"""The typed messages between the process pool's parent and its workers.

Each worker has its own pipe. The parent sends the pickled program and clients once, then a
:class:`Batch` of task specs per wave (and ``None`` to stop); the worker answers :class:`Ready`
once it holds its clients, then :class:`Started` for each batch and :class:`Done` for every task,
in order. Vectors never ride in these messages when they fit in shared memory; see
:mod:`fedloom.executors._pool_memory`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fedloom.core.messages import StageConfig
from fedloom.executors._pool_memory import Packed


@dataclass(frozen=True)
class TaskSpec:
    """One task as a worker sees it: vectors as references into the input block, and the
    ``capacity`` bytes at ``slot`` in the result block where its result vectors go."""

    position: int
    client: int
    params: Packed
    slot: int
    capacity: int
    train: bool = False
    round: int = 0
    seed: int = 0
    extras: Mapping[str, Packed] = field(default_factory=dict)
    stage_config: StageConfig = field(default_factory=dict)
    state: Mapping[str, Packed] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """Tasks for one worker, reading from shared block ``inputs`` and writing to ``results``."""

    inputs: str
    results: str
    tasks: tuple[TaskSpec, ...]


@dataclass(frozen=True)
class PackedResult:
    """A :class:`~fedloom.core.messages.ClientResult` with its vectors in the result block."""

    update: Packed
    num_examples: int
    extras: Mapping[str, Packed]
    metrics: Mapping[str, float]
    payload: bytes | None = None


@dataclass(frozen=True)
class Ready:
    """The worker has unpacked its program and clients and waits for tasks."""


@dataclass(frozen=True)
class StartFailed:
    """The worker could not unpack its program or clients; ``reason`` holds the traceback."""

    reason: str


@dataclass(frozen=True)
class Started:
    """The worker began a batch with the task at ``position``; its timeout runs from here, and
    each later task's from the Done of the one before."""

    position: int


@dataclass(frozen=True)
class Done:
    """The task at ``position`` finished with ``reply`` (a PackedResult, Evaluation or Failure).

    ``state`` is the client's next state, or None when the task failed and the state stays as
    it was. ``needed`` is how many result-block bytes the task's vectors took or would have.
    """

    position: int
    reply: object
    state: Mapping[str, Packed] | None
    needed: int
