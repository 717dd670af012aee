"""The Ray executor: a cohort's tasks spread over Ray actors, on this machine or a Ray cluster.

Ray is the engine here; fedloom builds no cluster of its own. Each actor is a process that
holds a fixed share of the clients' data, sent once when it starts, and runs their tasks exactly
as :class:`~fedloom.executors.InProcessExecutor` does, so results agree bit for bit. Per round:

* the driver puts the round's task list in Ray's object store once (``ray.put``). The broadcast
  parameters and extras are one object shared by every task, and pickling stores a shared object
  once, so the vectors enter the store once per round, not once per client; every actor on a
  node maps the same copy, and a remote node fetches it once;
* each actor gets one call per round, naming the positions of its tasks in that list and
  carrying its clients' kept states (SCAFFOLD's control variate);
* the actor streams its replies back (a Ray streaming generator, in chunks of about 0.1 s of
  work), each with the client's next state; updates travel back through the object store.

Clients cannot take the run down. A client that raises answers with a :class:`Failure` holding
the exception and its traceback. When an actor dies (``os._exit``, a segfault, the OOM killer, a
lost node) the driver starts a fresh actor with the same clients (their data is still in the
object store) and sends it the tasks not yet answered one at a time, so that the task that kills
it again is found and fails, naming the cause; the rest run as before. Kept states make a rerun
harmless: a task starts from the state the driver holds, whatever ran before.

Running on a cluster::

    ray start --head                      # on the head machine
    ray start --address=HEAD_IP:6379      # on every other machine

then run the script on one of those machines with ``RayExecutor(..., address="auto")``, or
submit it with ``ray job submit -- python script.py`` and leave ``address`` None. Every machine
needs the same Python environment with fedloom installed; user code a program refers to by
module (a ``fedloom.custom`` function) must be importable there too: install it, or pass
``runtime_env={"py_modules": [module]}`` or ``{"working_dir": "."}``. Where the cluster uses
Ray's token authentication, the driver needs the token too (``RAY_AUTH_MODE=token`` and the
cluster's token file). ``address="ray://HEAD_IP:10001"`` (Ray Client) works from outside the
cluster, but Ray Client streams no replies: each actor answers its batch in one piece, and a
lost actor's whole batch runs again one task at a time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import numpy as np
import ray
from ray.exceptions import OutOfMemoryError, RayActorError, WorkerCrashedError

from fedloom.algorithms import ClientProgram
from fedloom.core.messages import ClientResult, ClientState
from fedloom.data import ClientData
from fedloom.data.population import LazyClients
from fedloom.engine.secure_rounds import SecureTaskKind
from fedloom.engine.tasks import Failure, Reply, Task, TrainTask
from fedloom.executors._ray_actor import ShardWorker
from fedloom.executors._workers import partition
from fedloom.executors.secure import SecureClients
from fedloom.secagg.messages import SecureReply

log = logging.getLogger(__name__)

_START_WAIT_S = 30.0
"""Seconds between warnings while actors wait for CPUs to start on."""

_FLUSH_AFTER_S = 0.1
"""An actor sends its replies in chunks of about this many seconds' work."""

_ACTOR_LOST = (RayActorError, OutOfMemoryError, WorkerCrashedError)
"""How Ray reports an actor whose process is gone: it died or its node did, or Ray's memory
monitor killed it."""


@dataclass
class _Resources:
    """What an executor must give back: its actors, its object-store references and, when it
    started Ray, its share of that Ray instance.

    Kept apart from the executor so that the finalizer that releases them does not keep the
    executor alive.
    """

    actors: list[Any] = field(default_factory=list)
    program: Any = None
    shards: list[Any] = field(default_factory=list)
    ray_session: int | None = None
    """The :class:`_LocalRay` session this executor shares, or None when it started no Ray."""


class RayExecutor:
    """Runs tasks on ``actors`` Ray actors that keep their clients' data resident.

    ``program`` and ``clients`` are as for :class:`InProcessExecutor`. ``address`` None uses the
    Ray this process is connected to, or the cluster ``RAY_ADDRESS`` names (as under ``ray job
    submit``), or else starts a local Ray instance with this machine's CPUs; ``"auto"`` (from a
    machine of the cluster) or ``"ray://HOST:10001"`` (Ray Client, from anywhere) connects to a
    running cluster; see the module docstring. ``actors`` defaults to as many as the cluster's
    CPUs allow at ``num_cpus_per_actor`` each (never more than there are clients). Clients are
    divided once, by training-set size, so every actor holds about the same amount of data;
    each client always runs on its actor. ``runtime_env`` (a Ray runtime environment) reaches
    every actor: use it to ship user code to a cluster.

    Actors start in the constructor, which waits until every one holds its clients. Use the
    executor as a context manager, or call :meth:`close`, to kill them; if this executor
    started Ray, the last such executor to close shuts Ray down too. Garbage collection does
    the same for an executor left open.

    :attr:`states` holds each client's kept state in this process, so checkpoints see it as
    they do for the other executors; it travels to an actor with each task and back with the
    result. PyTorch actors run one intra-op thread each; for bit-identical results with the
    in-process executor run that one single-threaded too (``OMP_NUM_THREADS=1``).

    The program and the data travel by pickling, as everything does in Ray: run it only on a
    cluster whose machines you trust.
    """

    def __init__(
        self,
        program: ClientProgram,
        clients: Sequence[ClientData],
        *,
        actors: int | None = None,
        address: str | None = None,
        num_cpus_per_actor: float = 1.0,
        runtime_env: Mapping[str, Any] | None = None,
    ):
        if actors is not None and (
            isinstance(actors, bool) or not isinstance(actors, int) or actors < 1
        ):
            raise ValueError(f"actors must be a positive integer or None, got {actors!r}")
        if (
            isinstance(num_cpus_per_actor, bool)
            or not isinstance(num_cpus_per_actor, int | float)
            or not num_cpus_per_actor > 0
        ):
            raise ValueError(
                f"num_cpus_per_actor must be a positive number, got {num_cpus_per_actor!r}"
            )
        if address is not None and not isinstance(address, str):
            raise ValueError(f'address must be None, "auto" or "ray://HOST:PORT", got {address!r}')
        if isinstance(clients, LazyClients):
            raise ValueError(
                "the Ray executor ships every client's data to its actors at start, so a "
                "population made on demand (lazy=True) would be generated whole; use the "
                "inprocess executor for it"
            )
        by_id = {c.client_id: c for c in clients}
        if len(by_id) != len(clients):
            raise ValueError("client ids must be unique")
        if not by_id:
            raise ValueError("clients must hold at least one client, got none")
        self.program = program
        self.num_cpus_per_actor = float(num_cpus_per_actor)
        self.states: dict[int, ClientState] = {}
        self.secure = SecureClients()
        self._resources = _Resources()
        self._finalizer = weakref.finalize(self, _shut_down, self._resources)
        try:
            self._resources.ray_session = _connect(address, actors, self.num_cpus_per_actor)
            if actors is None:
                actors = max(1, int(_cluster_cpus() // self.num_cpus_per_actor))
            count = min(actors, len(by_id))
            self.assignment: dict[int, int] = partition(list(by_id.values()), count)
            """Which actor holds each client."""
            options: dict[str, Any] = {
                "num_cpus": self.num_cpus_per_actor,
                "scheduling_strategy": "SPREAD",
            }
            if runtime_env is not None:
                options["runtime_env"] = dict(runtime_env)
            self._actor_class = ray.remote(ShardWorker).options(**options)
            self._resources.program = ray.put(program)
            self._streaming = not _ray_client()
            for index in range(count):
                share = [c for c in by_id.values() if self.assignment[c.client_id] == index]
                self._resources.shards.append(ray.put(share))
                self._resources.actors.append(self._start(index))
            self._wait_until_ready()
        except BaseException:
            self.close()
            raise

    @property
    def actors(self) -> int:
        """How many actors the executor runs."""
        return len(self._resources.shards)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Kill the actors (and shut Ray down if this executor started it and no other executor
        still uses it); calling it again does nothing."""
        self._finalizer()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"actors={self.actors}"
        return f"RayExecutor({state}, clients={len(self.assignment)})"

    def run_secure(self, tasks: Sequence[SecureTaskKind]) -> list[SecureReply | Failure]:
        """The secure aggregation rounds' tasks: round 0's training on the actors as in
        :meth:`run`; the protocol's client sessions in this (the driver) process, where the
        trained updates arrive. They never reach the engine, which sees only protocol replies."""
        return self.secure.run(tasks, self.run)

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        """One reply per task, in order; tasks run concurrently across actors.

        An error that is no client's doing (Ray itself failing) closes the executor and raises.
        """
        if self.closed:
            raise RuntimeError("this RayExecutor is closed; create a new one")
        replies: list[Reply | None] = [None] * len(tasks)
        batches: dict[int, list[int]] = {}
        for position, task in enumerate(tasks):
            actor = self.assignment.get(task.client)
            if actor is None:
                replies[position] = Failure(f"unknown client {task.client}")
            else:
                batches.setdefault(actor, []).append(position)
        if batches:
            try:
                self._run_batches(tasks, batches, replies)
            except BaseException:
                self.close()
                raise
        assert all(r is not None for r in replies)
        return [r for r in replies if r is not None]

    def _run_batches(
        self, tasks: Sequence[Task], batches: dict[int, list[int]], replies: list[Reply | None]
    ) -> None:
        """Send each actor its batch in one call, then collect the replies as they stream in.

        When an actor is lost, the tasks it had not answered go to its replacement one call at
        a time until one of them loses it again: that task is the cause and fails (a loss that
        does not recur, such as a memory kill under pressure from elsewhere, costs nothing);
        the tasks after it go back to the replacement as one batch.
        """
        shared = ray.put(list(tasks))
        calls = deque((i, p, self._submit(i, shared, tasks, p)) for i, p in batches.items())
        while calls:
            index, positions, stream = calls.popleft()
            answered, lost = self._collect(stream, tasks, positions, replies)
            if lost is None:
                continue
            self._replace(index)
            if rest := self._one_by_one(index, shared, tasks, positions[answered:], replies):
                calls.append((index, rest, self._submit(index, shared, tasks, rest)))

    def _one_by_one(
        self,
        index: int,
        shared: Any,
        tasks: Sequence[Task],
        positions: list[int],
        replies: list[Reply | None],
    ) -> list[int]:
        """Run ``positions`` on actor ``index`` one call after another, so that a loss names
        its task; the positions after the first task that loses the actor, which fails."""
        for done, position in enumerate(positions):
            stream = self._submit(index, shared, tasks, [position])
            _, lost = self._collect(stream, tasks, [position], replies)
            if lost is not None:
                replies[position] = Failure(_death_reason(index, lost))
                self._replace(index)
                return positions[done + 1 :]
        return []

    def _collect(
        self, stream: Any, tasks: Sequence[Task], positions: list[int], replies: list[Reply | None]
    ) -> tuple[int, Exception | None]:
        """Store the replies of ``stream`` (and the clients' next states) as they arrive; how
        many arrived, and the error if the actor was lost before the last of them."""
        answered = 0
        try:
            for ref in stream:
                for reply, state in ray.get(ref):
                    position = positions[answered]
                    replies[position] = _owned(reply)
                    if state is not None:
                        self.states[tasks[position].client] = _owned_state(state)
                    answered += 1
        except _ACTOR_LOST as error:
            return answered, error
        return answered, None

    def _submit(self, index: int, shared: Any, tasks: Sequence[Task], positions: list[int]) -> Any:
        """Start actor ``index`` on ``positions``, with the kept states of its training clients
        as they stand now; returns the stream of its replies (through Ray Client, which streams
        no replies, a stream of one chunk: all of them)."""
        training = {tasks[p].client for p in positions if isinstance(tasks[p], TrainTask)}
        states = {c: self.states[c] for c in training if c in self.states}
        actor = self._resources.actors[index]
        if not self._streaming:
            return [actor.run_all.remote(shared, positions, states)]
        return actor.run.options(num_returns="streaming").remote(
            shared, positions, states, _FLUSH_AFTER_S
        )

    def _start(self, index: int) -> Any:
        return self._actor_class.remote(self._resources.program, self._resources.shards[index])

    def _replace(self, index: int) -> None:
        """Kill actor ``index`` for good and start a fresh one on the same shard, which Ray
        still holds, so the data is not sent again."""
        with contextlib.suppress(Exception):
            ray.kill(self._resources.actors[index], no_restart=True)
        self._resources.actors[index] = self._start(index)

    def _wait_until_ready(self) -> None:
        """Block until every actor holds its clients; say why while they wait for CPUs."""
        refs = [actor.ready.remote() for actor in self._resources.actors]
        while True:
            _, waiting = ray.wait(refs, num_returns=len(refs), timeout=_START_WAIT_S)
            if not waiting:
                break
            log.warning(
                "%d of %d Ray actors still wait to start; they need %g CPUs each and the "
                "cluster has %g in all",
                len(waiting),
                len(refs),
                self.num_cpus_per_actor,
                _cluster_cpus(),
            )
        for index, ref in enumerate(refs):
            try:
                ray.get(ref)
            except _ACTOR_LOST as error:
                raise RuntimeError(f"ray actor {index} could not start: {error}") from error


class _LocalRay:
    """The Ray instance this module started (numbered, in case someone shuts it down and it
    is started again) and how many executors use it, so that the last one to close shuts it
    down and none shuts down a Ray instance someone else started."""

    session: int | None = None
    started = 0
    users = 0


def _connect(address: str | None, actors: int | None, num_cpus_per_actor: float) -> int | None:
    """Connect this process to Ray; the number of the :class:`_LocalRay` session the executor
    shares, or None when someone else started Ray.

    ``address`` None means the Ray this process is already connected to, else the cluster
    ``RAY_ADDRESS`` names (as under ``ray job submit``), else a new local instance with enough
    CPUs for ``actors``; a cluster someone left running on this machine is used only when
    asked for, with ``"auto"``.
    """
    if ray.is_initialized():
        if _LocalRay.session is not None:
            _LocalRay.users += 1
        return _LocalRay.session
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "ignore_reinit_error": True,
    }
    if address is None and not os.environ.get("RAY_ADDRESS"):
        cpus = os.cpu_count() or 1
        if actors is not None:
            cpus = max(cpus, math.ceil(actors * num_cpus_per_actor))
        ray.init(address="local", num_cpus=cpus, **options)
        _LocalRay.started += 1
        _LocalRay.session, _LocalRay.users = _LocalRay.started, 1
        return _LocalRay.session
    ray.init(address=address, **options)
    _LocalRay.session = None
    return None


def _ray_client() -> bool:
    """Whether this process reaches Ray through Ray Client (``ray://``)."""
    from ray.util.client import ray as client

    return bool(client.is_connected())  # type: ignore[no-untyped-call]


def _cluster_cpus() -> float:
    """How many CPUs the Ray cluster has, all nodes together."""
    resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return float(resources.get("CPU", 0.0))


def _shut_down(resources: _Resources) -> None:
    """Kill every actor, drop the object-store references, and shut Ray down if this was the
    last executor using an instance this module started."""
    for actor in resources.actors:
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)
    resources.actors.clear()
    resources.program = None
    resources.shards.clear()
    session, resources.ray_session = resources.ray_session, None
    if session is not None and session == _LocalRay.session:
        _LocalRay.users -= 1
        if _LocalRay.users == 0:
            _LocalRay.session = None
            with contextlib.suppress(Exception):
                ray.shutdown()


def _owned(reply: Reply) -> Reply:
    """``reply`` with its vectors copied out of the object store, so they are writable and
    keeping them does not pin the whole round's replies there."""
    if not isinstance(reply, ClientResult):
        return reply
    return replace(reply, update=_copy(reply.update), extras=_owned_state(reply.extras))


def _owned_state(state: ClientState) -> ClientState:
    return {name: _copy(vector) for name, vector in state.items()}


def _copy(value: Any) -> Any:
    return value.copy() if isinstance(value, np.ndarray) else value


def _death_reason(index: int, error: Exception) -> str:
    """Why a task failed when its actor died, in one line: Ray's summary and the exit detail."""
    text = str(error).strip()
    summary = text.splitlines()[0].strip() if text else ""
    detail = re.search(r"Worker exit detail: (.*?\.)(?:\s|$)", text)
    cause = f"{summary} {detail.group(1)}" if detail else summary
    return f"ray actor {index} died while running this task ({type(error).__name__}: {cause})"
