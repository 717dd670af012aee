"""The process pool's worker processes and everything that must be released when it closes."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.context import BaseContext
from multiprocessing.shared_memory import SharedMemory

from fedloom.executors._pool_memory import release_block
from fedloom.executors._pool_messages import Batch, TaskSpec
from fedloom.executors._pool_worker import serve

_SHUTDOWN_GRACE = 2.0
"""Seconds idle workers get to exit on request before they are killed."""


class WorkerProcess:
    """One worker process, its pipe, and the tasks it has been sent but not yet answered.

    ``running`` is True while the queue's first task runs; it started at ``started_at``
    (``time.monotonic()``): when the worker said it started a batch, or when it finished the
    task before.
    """

    def __init__(self, context: BaseContext, index: int):
        self.index = index
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(  # type: ignore[attr-defined]
            target=serve, args=(child,), name=f"fedloom-pool-{index}", daemon=True
        )
        self.process.start()
        # Only the worker may hold the other end, so its death reads as end-of-file here.
        child.close()
        self.queue: deque[TaskSpec] = deque()
        self.ready = False
        self.running = False
        self.started_at = 0.0

    @property
    def exited(self) -> bool:
        """Whether the process has ended. Its sentinel, unlike ``is_alive()``, says so as soon as
        the process lets go of its files, before the kernel lets it be reaped."""
        return bool(wait([self.process.sentinel], timeout=0))

    def load(self, payload: bytes) -> None:
        """Send the worker its pickled ``(program, clients)``; returns once the worker, started,
        has taken it (so start every worker before loading any)."""
        with contextlib.suppress(OSError):
            self.conn.send_bytes(payload)

    def send(self, batch: Batch | None) -> None:
        """Send ``batch`` (None: stop); a dead worker is noticed by its sentinel, not here."""
        with contextlib.suppress(OSError):
            self.conn.send(batch)

    def stop(self, *, grace: float) -> None:
        """Ask the worker to exit, wait up to ``grace`` seconds, then kill it; reap it."""
        if grace > 0 and self.process.is_alive():
            self.send(None)
            self.process.join(grace)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


@dataclass
class Resources:
    """What a pool must give back: its worker processes and its shared blocks by role.

    Kept apart from the executor so that the finalizer that releases them does not keep the
    executor alive.
    """

    workers: list[WorkerProcess] = field(default_factory=list)
    blocks: dict[str, SharedMemory] = field(default_factory=dict)


def shut_down(resources: Resources) -> None:
    """Stop every worker (idle ones exit cleanly, busy ones are killed) and unlink every block."""
    for worker in resources.workers:
        worker.send(None)
    deadline = time.monotonic() + _SHUTDOWN_GRACE
    for worker in resources.workers:
        worker.stop(grace=max(0.0, deadline - time.monotonic()))
    resources.workers.clear()
    for block in resources.blocks.values():
        release_block(block, unlink=True)
    resources.blocks.clear()
