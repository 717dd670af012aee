"""The vectorized executor: a cohort's local training as one batched tensor computation.

Clients that run :class:`~fedloom.client.LocalSGD` over a :class:`~fedloom.torch.TorchModel`
train together: their parameter vectors stack into a ``[clients, dims]`` matrix and every local
step is one ``torch.func.vmap(grad)`` call over padded, masked minibatches (see
:mod:`fedloom.executors._batched`), or, for plain ``nn.Sequential`` MLPs, a hand-written batched
forward and backward pass that is about twice as fast (:mod:`fedloom.executors._dense`). Each
client still gets exactly the minibatches, gradient corrections (weight decay, FedProx,
SCAFFOLD), optimizer steps, control variates and FedNova normalization that
:class:`~fedloom.executors.InProcessExecutor` would give it, so results agree with the
in-process executor up to floating-point summation order.

Whatever cannot be batched runs through an in-process executor instead, with the same results:
a program other than LocalSGD over a TorchModel, or a module that vmap cannot batch faithfully
(buffers updated in training, such as BatchNorm's running statistics; random numbers drawn in
training, such as Dropout's), decided once at construction and named by
:attr:`VectorizedExecutor.fallback_reason`; and single tasks that would fail anyway (a client
with no data, a malformed broadcast), so that their failures read exactly as in process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedloom.algorithms import ClientProgram
from fedloom.client.local_sgd import CONTROL, LocalSGD
from fedloom.core.layout import Vector
from fedloom.core.messages import ClientState
from fedloom.data import ClientData
from fedloom.data.population import LazyClients
from fedloom.engine.secure_rounds import SecureTaskKind
from fedloom.engine.tasks import Failure, Reply, Task, TrainTask
from fedloom.executors._batched import (
    BatchedModel,
    ClientStore,
    train_chunk,
    trial_mismatch,
)
from fedloom.executors._workers import waves
from fedloom.executors.inprocess import InProcessExecutor
from fedloom.secagg.messages import SecureReply
from fedloom.torch.model import TorchModel

logger = logging.getLogger(__name__)


class VectorizedExecutor:
    """Trains each cohort's clients at once with ``torch.func``; evaluates them one by one.

    ``clients`` and ``catch`` are as for :class:`InProcessExecutor`, and so is :attr:`states`
    (each client's SCAFFOLD control variate), so checkpoints work the same. At most
    ``max_batch_clients`` clients train in one batched computation; a larger cohort goes in
    chunks, which bounds memory. When the program cannot be vectorized, every task runs in
    process and :attr:`fallback_reason` says why; with ``strict=True`` the constructor raises
    ValueError with that reason instead.
    """

    def __init__(
        self,
        program: ClientProgram,
        clients: Sequence[ClientData],
        *,
        strict: bool = False,
        max_batch_clients: int = 256,
        catch: bool = True,
    ):
        if (
            isinstance(max_batch_clients, bool)
            or not isinstance(max_batch_clients, int)
            or max_batch_clients < 1
        ):
            raise ValueError(
                f"max_batch_clients must be a positive integer, got {max_batch_clients!r}"
            )
        self.program = program
        self.strict = strict
        self.max_batch_clients = max_batch_clients
        self.batched_tasks = 0
        """Training tasks trained in a batch so far (the rest went one at a time)."""
        self.catch = catch
        self._inprocess = InProcessExecutor(program, clients, catch=catch)
        self.client = self._inprocess.client
        self._batched, self.fallback_reason = _batched_training(program, clients)
        if self.fallback_reason is not None:
            if strict:
                raise ValueError(f"cannot vectorize this client program: {self.fallback_reason}")
            logger.warning(
                "VectorizedExecutor runs clients one at a time: %s", self.fallback_reason
            )

    @property
    def vectorized(self) -> bool:
        """Whether training tasks run batched (False: all of them run in process)."""
        return self._batched is not None

    @property
    def states(self) -> dict[int, ClientState]:
        """Each client's state between rounds, shared with the in-process path."""
        return self._inprocess.states

    @states.setter
    def states(self, value: dict[int, ClientState]) -> None:
        self._inprocess.states = value

    def run_secure(self, tasks: Sequence[SecureTaskKind]) -> list[SecureReply | Failure]:
        """The secure aggregation rounds' tasks: round 0's training batched as in :meth:`run`,
        the protocol itself by the in-process executor's client sessions (the same code)."""
        return self._inprocess.secure.run(tasks, self.run)

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        """One reply per task, in order: training tasks batched, evaluations in process."""
        if self._batched is None:
            return self._inprocess.run(tasks)
        replies: list[Reply | None] = [None] * len(tasks)
        # A client listed twice trains twice, the second time from the state the first left.
        for wave in waves(tasks):
            self._train_wave(self._batched, [(p, tasks[p]) for p in wave], replies)
        assert all(reply is not None for reply in replies)
        return [reply for reply in replies if reply is not None]

    def _train_wave(
        self,
        batched: _BatchedTraining,
        wave: Sequence[tuple[int, Task]],
        replies: list[Reply | None],
    ) -> None:
        """Fill ``replies`` at the positions of ``wave``'s training tasks (one per client)."""
        ready: list[tuple[int, TrainTask]] = []
        for position, task in wave:
            if isinstance(task, TrainTask) and self._can_batch(batched.work, task):
                ready.append((position, task))
            else:
                replies[position] = self._inprocess.run([task])[0]
        # Clients with similar step counts share a chunk, so few finish long before the rest.
        ready.sort(
            key=lambda item: (
                -batched.work.num_steps(
                    self._data(item[1].client).num_train, item[1].broadcast.max_steps
                )
            )
        )
        for low in range(0, len(ready), self.max_batch_clients):
            chunk = ready[low : low + self.max_batch_clients]
            chunk_tasks = [task for _, task in chunk]
            try:
                outcome = self._train_chunk(batched, chunk_tasks)
                self.batched_tasks += len(chunk_tasks)
            except Exception as error:
                # Whatever broke the batch (a bad label in one client's data, say), the in-process
                # path pins it on the client it belongs to.
                logger.warning(
                    "batched training of %d clients failed (%s: %s); training them one at a time",
                    len(chunk_tasks),
                    type(error).__name__,
                    error,
                )
                outcome = self._inprocess.run(chunk_tasks)
            for (position, _), reply in zip(chunk, outcome, strict=True):
                replies[position] = reply

    def _can_batch(self, work: LocalSGD, task: TrainTask) -> bool:
        """Whether ``task`` is well formed; the in-process path reports one that is not."""
        data = self.client(task.client)
        if data is None or data.num_train == 0:
            return False
        size = work.model.layout.size
        vectors: list[Vector | None] = [task.broadcast.params]
        if work.control_variates:
            vectors.append(task.broadcast.extras.get(CONTROL))
            kept = self.states.get(task.client, {}).get(CONTROL)
            if kept is not None:  # a client's first round starts from c_i = 0
                vectors.append(kept)
        return all(v is not None and np.shape(v) == (size,) for v in vectors)

    def _data(self, client: int) -> ClientData:
        data = self.client(client)
        assert data is not None, f"client {client} was checked before batching"
        return data

    def _train_chunk(self, batched: _BatchedTraining, tasks: Sequence[TrainTask]) -> list[Reply]:
        work = batched.work
        layout = work.model.layout
        clients = [self._data(task.client) for task in tasks]
        first = tasks[0].broadcast.params
        if all(t.broadcast.params is first for t in tasks):
            # One broadcast vector for the whole chunk (the usual round): no [clients, dims] copy.
            shared = layout.check(first, what="broadcast params")
            starts = np.broadcast_to(shared, (len(tasks), shared.size))
        else:
            starts = np.stack(
                [layout.check(t.broadcast.params, what="broadcast params") for t in tasks]
            )
        states = [self.states.get(task.client, {}) for task in tasks]
        constants = None
        if work.control_variates:
            constants = np.stack(
                [
                    _required(work.control_correction(task.broadcast, state))
                    for task, state in zip(tasks, states, strict=True)
                ]
            )
        broadcasts = [task.broadcast for task in tasks]
        trained = train_chunk(
            work, batched.model, batched.store, clients, starts, broadcasts, constants
        )
        # A failure here fails the chunk, which _train_wave then runs in process, client by client.
        outcomes = work.results(
            broadcasts,
            states,
            updates=trained.params - starts,
            mean_losses=trained.mean_losses,
            steps=trained.steps.tolist(),
            num_examples=[data.num_train for data in clients],
        )
        replies: list[Reply] = []
        for task, (result, new_state) in zip(tasks, outcomes, strict=True):
            try:
                result, new_state = self.program.finish(task.broadcast, result, new_state)
            except Exception as error:
                if not self.catch:
                    raise
                replies.append(Failure(f"{type(error).__name__}: {error}"))
                continue
            self.states[task.client] = new_state
            replies.append(result)
        return replies


@dataclass(frozen=True)
class _BatchedTraining:
    """What batched training needs, built once: the loop's settings, the module, the data."""

    work: LocalSGD
    model: BatchedModel
    store: ClientStore


def _batched_training(
    program: ClientProgram, clients: Sequence[ClientData]
) -> tuple[_BatchedTraining | None, str | None]:
    """Batched training for ``program`` on ``clients``, or None and why it cannot be had."""
    if type(program) is not ClientProgram:
        return None, f"the client program is a {type(program).__name__}, not a ClientProgram"
    work = program.work
    if type(work) is not LocalSGD:
        return None, (
            f"the client work is {type(work).__name__}, not fedloom's LocalSGD loop "
            "(a custom training function cannot be batched)"
        )
    if type(work.model) is not TorchModel:
        return None, f"the model is a {type(work.model).__name__}, not a fedloom.torch.TorchModel"
    try:
        model = BatchedModel(work.model)
    except Exception as error:
        return None, f"the module could not be built ({type(error).__name__}: {error})"
    if isinstance(clients, LazyClients):
        return None, (
            "the population is made on demand (lazy=True), and batching stacks every client's "
            "data once up front"
        )
    buffers = [entry.name for entry in model.entries if entry.is_buffer]
    if buffers:
        return None, (
            f"the module has buffers that training updates in place ({', '.join(buffers)}; "
            "BatchNorm's running statistics, say), which vmap cannot batch"
        )
    try:
        store = ClientStore(clients, model)
    except ValueError as error:
        return None, f"the clients' training data cannot be stacked: {error}"
    trial = max(clients, key=lambda c: c.num_train, default=None)
    if trial is not None and trial.num_train > 0:
        try:
            mismatch = trial_mismatch(work.model, model, trial)
        except Exception as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            return None, (
                f"a trial step under torch.func.vmap failed ({type(error).__name__}: "
                f"{first_line}); modules that draw random numbers in training (Dropout) or "
                "change state in place cannot be batched"
            )
        if mismatch is not None:
            return None, mismatch
    return _BatchedTraining(work, model, store), None


def _required(vector: Vector | None) -> Vector:
    assert vector is not None, "SCAFFOLD's correction is set whenever control variates are on"
    return vector
