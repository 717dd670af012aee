"""The side of the Ray executor that runs inside each actor: a shard of clients, resident."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from fedloom.algorithms import ClientProgram
from fedloom.core.messages import ClientResult, ClientState
from fedloom.data import ClientData
from fedloom.engine.tasks import Reply, Task, TrainTask
from fedloom.executors._workers import failure_from, single_threaded_torch
from fedloom.executors.inprocess import InProcessExecutor


class ShardWorker:
    """What each Ray actor runs: some clients' data, resident, and their tasks on request.

    It keeps nothing between calls but the program and the data: each client's state arrives
    with its tasks and leaves with each reply, so a replacement actor loses nothing.
    """

    def __init__(self, program: ClientProgram, clients: Sequence[ClientData]):
        # Ray hands the data over as read-only views of its object store; the in-process
        # executor gives client code its own writable arrays, and so does this.
        owned = [
            ClientData(
                c.client_id,
                np.array(c.x_train),
                np.array(c.y_train),
                np.array(c.x_test),
                np.array(c.y_test),
            )
            for c in clients
        ]
        self._executor = InProcessExecutor(program, owned, catch=False)
        single_threaded_torch()

    def ready(self) -> int:
        """This actor's process id, once it holds its clients."""
        return os.getpid()

    def run(
        self,
        tasks: Sequence[Task],
        positions: Sequence[int],
        states: Mapping[int, ClientState],
        flush_after: float,
    ) -> Iterator[list[tuple[Reply, ClientState | None]]]:
        """Run ``tasks[p]`` for each of ``positions`` in order, yielding the replies, each with
        the client's next state (None when the task was no training or failed), in chunks of
        about ``flush_after`` seconds' work: every yield costs a message, and tiny clients would
        otherwise spend more time on those than on training.

        ``states`` holds the kept state of the clients that train; a client listed twice trains
        the second time from the state the first left, as in process.
        """
        single_threaded_torch()  # the program's code may have imported PyTorch since
        executor = self._executor
        executor.states = {c: {k: np.array(v) for k, v in s.items()} for c, s in states.items()}
        chunk: list[tuple[Reply, ClientState | None]] = []
        since = time.monotonic()
        try:
            for position in positions:
                chunk.append(run_task(executor, tasks[position]))
                if time.monotonic() - since >= flush_after:
                    yield chunk
                    chunk, since = [], time.monotonic()
            if chunk:
                yield chunk
        finally:
            executor.states = {}

    def run_all(
        self, tasks: Sequence[Task], positions: Sequence[int], states: Mapping[int, ClientState]
    ) -> list[tuple[Reply, ClientState | None]]:
        """:meth:`run`'s replies in one list, for drivers connected through Ray Client."""
        return [r for chunk in self.run(tasks, positions, states, math.inf) for r in chunk]


def run_task(executor: InProcessExecutor, task: Task) -> tuple[Reply, ClientState | None]:
    """``task`` through the in-process executor, so its behaviour is the reference's; an
    exception becomes a :class:`Failure` with the traceback, to find the bug by."""
    try:
        reply = executor.run([task])[0]
    except Exception as error:
        return failure_from(error), None
    trained = isinstance(task, TrainTask) and isinstance(reply, ClientResult)
    return reply, executor.states.get(task.client) if trained else None
