"""The client side of secure aggregation: one protocol session per client.

An executor that simulates clients keeps each client's :class:`~fedloom.secagg.client.ClientSession`
here between the protocol's rounds; a deployed site (:mod:`fedloom.transport.secure_site`) keeps
its one session here too, so simulators and real sites run the same client code. Training
for round 0 goes through the executor's ordinary training path (batched, in the vectorized
executor), and the trained update goes straight into the client's session: it never leaves the
client side unmasked.

The clients' protocol work in one call (quantizing, key agreements, AES-CTR mask expansion,
Shamir sharing) runs on a few threads: every client's session is its own, and the work is
mostly in OpenSSL and NumPy, which release the GIL, so a simulator uses the machine's cores as
a federation's devices would each use their own. Replies are the same, in the same order,
whatever the number of threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import numpy as np

from fedloom.core.messages import ClientResult
from fedloom.engine.secure_rounds import SecureTaskKind
from fedloom.engine.tasks import Failure, Reply, Task, TrainTask
from fedloom.secagg.client import ClientSession, ProtocolAbort
from fedloom.secagg.messages import (
    KeyRoster,
    MaskingRequest,
    SecureReply,
    SecureTask,
    SecureTrainTask,
    UnmaskRequest,
)

_T = TypeVar("_T")


def _call(work: Callable[[], _T]) -> _T:
    return work()


def default_threads() -> int:
    """Threads for the clients' protocol work: the cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


class SecureClients:
    """Every simulated client's SecAgg+ session of the current round.

    ``threads``: how many clients' protocol steps run at once (default: :func:`default_threads`;
    1 runs them one after another in the calling thread).
    """

    def __init__(self, threads: int | None = None) -> None:
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise ValueError(f"threads must be an integer >= 1 or None, got {threads!r}")
        self.threads = default_threads() if threads is None else threads
        self.sessions: dict[int, ClientSession] = {}
        self._pool: ThreadPoolExecutor | None = None

    def run(
        self, tasks: Sequence[SecureTaskKind], train: Callable[[Sequence[Task]], list[Reply]]
    ) -> list[SecureReply | Failure]:
        """One reply per task, in order; ``train`` runs the round-0 training tasks."""
        replies: list[SecureReply | Failure | None] = [None] * len(tasks)
        training = [(p, t) for p, t in enumerate(tasks) if isinstance(t, SecureTrainTask)]
        if training:
            # A new round: sessions left by an earlier round that aborted are dead.
            current = {t.setup.round for _, t in training}
            self.sessions = {c: s for c, s in self.sessions.items() if s.setup.round in current}
        trained = train([TrainTask(t.client, t.broadcast) for _, t in training]) if training else []
        for _, start in training:
            self.sessions.pop(start.client, None)
        starts = [partial(self._start, t, r) for (_, t), r in zip(training, trained, strict=True)]
        for (position, start), (reply, session) in zip(training, self._each(starts), strict=True):
            replies[position] = reply
            if session is not None:
                self.sessions[start.client] = session
        steps = [(p, t) for p, t in enumerate(tasks) if isinstance(t, SecureTask)]
        work = [partial(self._step, t, self.sessions.get(t.client)) for _, t in steps]
        # A client listed twice would step one session from two threads: keep those in order.
        alone = len({t.client for _, t in steps}) == len(steps)
        for (position, task), (reply, ended) in zip(steps, self._each(work, alone), strict=True):
            replies[position] = reply
            if ended:
                self.sessions.pop(task.client, None)
        assert all(r is not None for r in replies)
        return [r for r in replies if r is not None]

    def _each(self, work: Sequence[Callable[[], _T]], concurrent: bool = True) -> list[_T]:
        """Every function's result, in order: on the pool's threads when there are several."""
        if not concurrent or self.threads == 1 or len(work) < 2:
            return [w() for w in work]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fedloom-secagg")
        return list(self._pool.map(_call, work))

    @staticmethod
    def _start(
        task: SecureTrainTask, result: Reply
    ) -> tuple[SecureReply | Failure, ClientSession | None]:
        """Round 0's reply, and the session to keep (None when the client is out)."""
        if isinstance(result, Failure):
            return result, None
        if not isinstance(result, ClientResult):
            return Failure(f"training answered with a {type(result).__name__}"), None
        try:
            # Stochastic rounding draws from its own stream, apart from training's and stages'.
            rng = np.random.default_rng([task.broadcast.seed, 2])
            session = ClientSession.start(task.client, task.setup, result, rng)
            reply = session.advertise()
        except (ProtocolAbort, ValueError) as error:
            return Failure(str(error)), None
        return reply, session

    @staticmethod
    def _step(
        task: SecureTask, session: ClientSession | None
    ) -> tuple[SecureReply | Failure, bool]:
        """A later round's reply, and whether the client's session has ended."""
        if session is None:
            return Failure(
                f"client {task.client} has no secure aggregation session this round"
            ), False
        request = task.request
        try:
            if isinstance(request, KeyRoster):
                return session.share_keys(request), False
            if isinstance(request, MaskingRequest):
                return session.mask(request), False
            if isinstance(request, UnmaskRequest):
                return session.unmask(request), True
            return Failure(f"unknown secure aggregation request {type(request).__name__}"), False
        except ProtocolAbort as error:
            return Failure(str(error)), True
