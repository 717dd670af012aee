"""The in-process executor: each task is a plain function call, one client after another.

It keeps every client's data and state (SCAFFOLD's control variate) as a deployed client would,
so the engine sees exactly the interface it sees over the network.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedloom.algorithms import ClientProgram
from fedloom.core.messages import ClientState
from fedloom.data import ClientData
from fedloom.data.population import client_lookup
from fedloom.engine.secure_rounds import SecureTaskKind
from fedloom.engine.tasks import EvaluateTask, Evaluation, Failure, Reply, Task, TrainTask
from fedloom.executors.secure import SecureClients
from fedloom.secagg.messages import SecureReply


class InProcessExecutor:
    """Runs tasks sequentially in this process.

    A client whose code raises answers with a :class:`Failure` naming the exception, so the rest
    of the cohort still counts; pass ``catch=False`` to let the exception propagate while
    debugging client code.
    """

    def __init__(
        self, program: ClientProgram, clients: Sequence[ClientData], *, catch: bool = True
    ):
        self.program = program
        self.clients = clients
        self.client = client_lookup(clients)
        self.catch = catch
        self.states: dict[int, ClientState] = {}
        self.secure = SecureClients()

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        return [self._one(task) for task in tasks]

    def run_secure(self, tasks: Sequence[SecureTaskKind]) -> list[SecureReply | Failure]:
        """The secure aggregation rounds' tasks (see :mod:`fedloom.engine.secure_rounds`)."""
        return self.secure.run(tasks, self.run)

    def _one(self, task: Task) -> Reply:
        data = self.client(task.client)
        if data is None:
            return Failure(f"unknown client {task.client}")
        try:
            if isinstance(task, TrainTask):
                state = self.states.get(task.client, {})
                result, state = self.program.run(task.broadcast, data.x_train, data.y_train, state)
                self.states[task.client] = state
                return result
            assert isinstance(task, EvaluateTask)
            if data.num_test == 0:
                return Evaluation(0)
            return Evaluation(
                data.num_test, self.program.evaluate(task.params, data.x_test, data.y_test)
            )
        except Exception as error:
            if not self.catch:
                raise
            return Failure(f"{type(error).__name__}: {error}")
