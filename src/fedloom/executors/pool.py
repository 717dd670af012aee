"""The process-pool executor: a cohort's tasks spread over worker processes on this machine.

Each worker holds a fixed share of the clients' data, sent once when it starts, and runs their
tasks exactly as :class:`~fedloom.executors.InProcessExecutor` does, so results agree bit for
bit. Per round only vectors and small metadata move, and the vectors through shared memory:

* the parent writes every distinct input vector of a wave of tasks (the broadcast parameters
  and extras such as SCAFFOLD's control variate, once for the whole cohort; each client's kept
  state) into one ``SharedMemory`` block, which workers read through read-only NumPy views;
* each task owns a slot of a second block, where its worker writes the update, the result's
  extras (SCAFFOLD's full-size control change) and the client's next state;
* the pipes carry only task specs (offsets, seeds, stage configs) and replies' numbers and
  metrics. A vector that is not a plain numeric array, or outgrows its slot, is pickled instead.

Clients cannot take the run down. A client that raises answers with a :class:`Failure` holding
the exception and its traceback; a task still running after ``task_timeout`` seconds, or a
worker that dies (``os._exit``, a segfault, the OOM killer), fails that one task, and the worker
is replaced by a fresh process with the same clients, which then runs the tasks still queued.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time
import weakref
from collections.abc import Sequence
from multiprocessing.connection import wait
from multiprocessing.shared_memory import SharedMemory
from types import TracebackType
from typing import cast

import numpy as np

from fedloom.algorithms import ClientProgram
from fedloom.core.messages import ClientResult, ClientState
from fedloom.data import ClientData
from fedloom.data.population import LazyClients
from fedloom.engine.secure_rounds import SecureTaskKind
from fedloom.engine.tasks import Failure, Reply, Task, TrainTask
from fedloom.executors._pool_memory import (
    Packer,
    aligned,
    buffer,
    copied,
    copied_mapping,
    create_block,
    release_block,
)
from fedloom.executors._pool_messages import (
    Batch,
    Done,
    PackedResult,
    Ready,
    Started,
    StartFailed,
    TaskSpec,
)
from fedloom.executors._pool_processes import Resources, WorkerProcess, shut_down
from fedloom.executors._workers import partition, waves
from fedloom.executors.secure import SecureClients
from fedloom.secagg.messages import SecureReply


class PoolExecutor:
    """Runs tasks on ``workers`` processes that keep their clients' data resident.

    ``program`` and ``clients`` are as for :class:`InProcessExecutor`; ``workers`` defaults to
    the machine's CPU count (never more than there are clients). Clients are divided once, by
    training-set size, so every worker holds about the same amount of data; each client always
    runs on its worker. ``task_timeout`` (seconds, or None for no limit) bounds one task;
    ``start_method`` is a :mod:`multiprocessing` start method (``"spawn"``, the default, is the
    safe one once PyTorch or threads are about; ``"forkserver"``, ``"fork"``).

    Workers start in the constructor. Use the executor as a context manager, or call
    :meth:`close`, to stop them and free the shared memory; garbage collection and interpreter
    exit do the same for an executor left open.

    :attr:`states` holds each client's kept state (SCAFFOLD's control variate) in this process,
    so checkpoints see it as they do for the other executors; it travels to a worker with each
    task and back with the result.

    The program, the clients' data and the per-task metadata travel by pickling (done by
    :mod:`multiprocessing` and by this executor). That is safe only because both ends are
    processes of the same user on this machine; nothing here listens to another party. Under
    ``"spawn"`` a program with a user function (``fedloom.custom``) needs that function to be
    importable by workers: defined at module level, in a module on ``sys.path``, not a lambda.
    PyTorch workers run one intra-op thread each; for bit-identical results with the in-process
    executor run that one single-threaded too (``OMP_NUM_THREADS=1``).
    """

    def __init__(
        self,
        program: ClientProgram,
        clients: Sequence[ClientData],
        *,
        workers: int | None = None,
        task_timeout: float | None = None,
        start_method: str = "spawn",
    ):
        if workers is not None and (
            isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
        ):
            raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
        if task_timeout is not None and (
            isinstance(task_timeout, bool)
            or not isinstance(task_timeout, int | float)
            or not task_timeout > 0
        ):
            raise ValueError(
                f"task_timeout must be a positive number of seconds or None, got {task_timeout!r}"
            )
        methods = multiprocessing.get_all_start_methods()
        if start_method not in methods:
            raise ValueError(f"start_method must be one of {methods}, got {start_method!r}")
        if isinstance(clients, LazyClients):
            raise ValueError(
                "the process executor ships every client's data to its workers at start, so a "
                "population made on demand (lazy=True) would be generated whole; use the "
                "inprocess executor for it"
            )
        by_id = {c.client_id: c for c in clients}
        if len(by_id) != len(clients):
            raise ValueError("client ids must be unique")
        try:
            self._program = pickle.dumps(program, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            raise ValueError(
                "program must be picklable to reach worker processes (a user function must be "
                f"defined at module level, not a lambda or a closure): {error}"
            ) from error
        self.program = program
        self.task_timeout = None if task_timeout is None else float(task_timeout)
        self.start_method = start_method
        self.states: dict[int, ClientState] = {}
        self.secure = SecureClients()
        count = min(workers or os.cpu_count() or 1, len(by_id))
        self.assignment: dict[int, int] = partition(list(by_id.values()), count)
        """Which worker holds each client."""
        self._shares = [[by_id[c] for c in by_id if self.assignment[c] == w] for w in range(count)]
        self._context = multiprocessing.get_context(start_method)
        self._slot_bytes = 0
        self._resources = Resources()
        self._finalizer = weakref.finalize(self, shut_down, self._resources)
        self._resources.workers.extend(WorkerProcess(self._context, i) for i in range(count))
        # All started before any is loaded, the workers boot side by side.
        for worker in self._resources.workers:
            worker.load(self._payload(worker.index))

    @property
    def workers(self) -> int:
        """How many worker processes the pool runs."""
        return len(self._shares)

    @property
    def worker_pids(self) -> list[int | None]:
        """The current process id of each worker (a replaced worker has a new one)."""
        return [w.process.pid for w in self._resources.workers]

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Stop the workers and unlink the shared memory; calling it again does nothing."""
        self._finalizer()

    def __enter__(self) -> PoolExecutor:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"workers={self.workers}"
        return f"PoolExecutor({state}, clients={len(self.assignment)})"

    def run_secure(self, tasks: Sequence[SecureTaskKind]) -> list[SecureReply | Failure]:
        """The secure aggregation rounds' tasks: round 0's training on the workers as in
        :meth:`run`; the protocol's client sessions in this (the driver) process, where the
        trained updates arrive. They never reach the engine, which sees only protocol replies."""
        return self.secure.run(tasks, self.run)

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        """One reply per task, in order; tasks run concurrently across workers.

        A client listed twice trains twice, the second time from the state the first left, as in
        process. An error that is no client's doing (a worker that cannot start) closes the
        pool and raises RuntimeError.
        """
        if self.closed:
            raise RuntimeError("this PoolExecutor is closed; create a new one")
        replies: list[Reply | None] = [None] * len(tasks)
        try:
            for wave in waves(tasks):
                self._run_wave([(p, tasks[p]) for p in wave], replies)
        except BaseException:
            self.close()
            raise
        assert all(r is not None for r in replies)
        return [r for r in replies if r is not None]

    def _run_wave(self, items: list[tuple[int, Task]], replies: list[Reply | None]) -> None:
        """Lay out the wave's vectors in shared memory, dispatch its tasks, collect the replies."""
        packer = Packer()
        specs: list[TaskSpec] = []
        slots = 0
        for position, task in items:
            if task.client not in self.assignment:
                replies[position] = Failure(f"unknown client {task.client}")
                continue
            spec = self._spec(position, task, packer, slots)
            slots += aligned(spec.capacity)
            specs.append(spec)
        if not specs:
            return
        inputs = self._block("inputs", packer.size)
        results = self._block("results", slots)
        packer.write(buffer(inputs))
        batches: dict[int, list[TaskSpec]] = {}
        for spec in specs:
            batches.setdefault(self.assignment[spec.client], []).append(spec)
        for index, batch in batches.items():
            worker = self._resources.workers[index]
            if worker.exited:  # died between rounds: no task to blame
                worker = self._restart(worker)
            worker.queue.extend(batch)
            worker.send(Batch(inputs.name, results.name, tuple(batch)))
        self._collect(replies, buffer(results))

    def _spec(self, position: int, task: Task, packer: Packer, slot: int) -> TaskSpec:
        """``task`` as a worker will see it, its vectors (and its client's state) in ``packer``
        and its result at byte ``slot`` of the result block."""
        if not isinstance(task, TrainTask):
            return TaskSpec(position, task.client, packer.add(task.params), slot, 0)
        broadcast = task.broadcast
        state = self.states.get(task.client, {})
        inputs = [broadcast.params, *broadcast.extras.values(), *state.values()]
        # A result holds the update, extras about the broadcast's and a state about as large;
        # untouched shared-memory pages cost nothing, so err on the large side.
        estimate = 2 * sum(aligned(np.asarray(v).nbytes) for v in inputs) + 1024
        return TaskSpec(
            position,
            task.client,
            packer.add(broadcast.params),
            slot,
            max(estimate, self._slot_bytes),
            train=True,
            round=broadcast.round,
            seed=broadcast.seed,
            extras=packer.add_mapping(broadcast.extras),
            stage_config=broadcast.stage_config,
            state=packer.add_mapping(state),
        )

    def _block(self, role: str, nbytes: int) -> SharedMemory:
        """The shared block for ``role``, replaced by a larger one if it is under ``nbytes``."""
        blocks = self._resources.blocks
        block = blocks.get(role)
        if block is None or block.size < nbytes:
            if block is not None:
                release_block(block, unlink=True)
            block = blocks[role] = create_block(max(nbytes, 2 * block.size if block else 0))
        return block

    def _collect(self, replies: list[Reply | None], results: memoryview) -> None:
        """Wait for every queued task: replies, deaths and timeouts, whichever comes first."""
        while busy := [w for w in self._resources.workers if w.queue]:
            timeout = None
            if self.task_timeout is not None:
                started = [w.started_at for w in busy if w.running]
                if started:
                    timeout = max(0.0, min(started) + self.task_timeout - time.monotonic())
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout))
            for worker in busy:
                if worker.conn in ready or worker.process.sentinel in ready:
                    self._receive(worker, replies, results)
            if self.task_timeout is not None:
                for worker in self._resources.workers:
                    late = time.monotonic() - worker.started_at >= self.task_timeout
                    if worker.running and late:
                        worker.process.kill()
                        self._replace(worker, replies, f"timed out after {self.task_timeout:g}s")

    def _receive(
        self, worker: WorkerProcess, replies: list[Reply | None], results: memoryview
    ) -> None:
        """Handle everything ``worker`` has sent; replace it if it has died."""
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if isinstance(message, Started):
                    worker.running = True
                    worker.started_at = time.monotonic()
                elif isinstance(message, Done):
                    spec = worker.queue.popleft()
                    assert spec.position == message.position
                    worker.running = bool(worker.queue)
                    worker.started_at = time.monotonic()
                    replies[spec.position] = self._reply(spec, message, results)
                elif isinstance(message, Ready):
                    worker.ready = True
                elif isinstance(message, StartFailed):
                    raise RuntimeError(
                        f"pool worker {worker.index} could not start:\n{message.reason}"
                    )
        except (EOFError, OSError):
            pass
        else:
            if not worker.exited:
                return
        worker.process.join(timeout=5)
        ended = _ended(worker.process.exitcode)
        if not worker.ready:
            raise RuntimeError(f"pool worker {worker.index} exited while starting, {ended}")
        self._replace(worker, replies, f"worker process died, {ended}")

    def _reply(self, spec: TaskSpec, done: Done, results: memoryview) -> Reply:
        """The engine's reply from a worker's message, vectors copied out of the result block."""
        if done.state is not None:
            self.states[spec.client] = copied_mapping(results, done.state)
        self._slot_bytes = max(self._slot_bytes, done.needed)
        reply = done.reply
        if isinstance(reply, PackedResult):
            return ClientResult(
                copied(results, reply.update),
                reply.num_examples,
                copied_mapping(results, reply.extras),
                reply.metrics,
                reply.payload,
            )
        return cast(Reply, reply)

    def _replace(self, worker: WorkerProcess, replies: list[Reply | None], reason: str) -> None:
        """Fail ``worker``'s current task with ``reason``; a replacement runs the rest."""
        failed = worker.queue.popleft()
        replies[failed.position] = Failure(reason)
        fresh = self._restart(worker)
        if worker.queue:
            fresh.queue.extend(worker.queue)
            blocks = self._resources.blocks
            fresh.send(Batch(blocks["inputs"].name, blocks["results"].name, tuple(worker.queue)))

    def _restart(self, worker: WorkerProcess) -> WorkerProcess:
        """Kill ``worker`` if it still runs; a fresh process with its clients takes its place."""
        worker.stop(grace=0)
        fresh = WorkerProcess(self._context, worker.index)
        fresh.load(self._payload(worker.index))
        self._resources.workers[worker.index] = fresh
        return fresh

    def _payload(self, index: int) -> bytes:
        """What worker ``index`` starts from: the pickled program and its clients' data."""
        share = self._shares[index]
        return pickle.dumps((self._program, share), protocol=pickle.HIGHEST_PROTOCOL)


def _ended(code: int | None) -> str:
    """How a process ended, in words: its exit code, and the signal that killed it if any."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} (exit code {code})"
    return f"exit code {code}"
