"""Where a cohort's tasks run: one client after another in this process, or a whole cohort at once
as one batched PyTorch computation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, TypeVar

from fedloom.algorithms import ClientProgram
from fedloom.core.errors import MissingExtra
from fedloom.core.messages import ClientState
from fedloom.data import ClientData
from fedloom.engine import Executor
from fedloom.executors.inprocess import InProcessExecutor

E = TypeVar("E")

EXECUTORS = ("inprocess", "vectorized", "process", "ray")
"""Executor names that run files and ``simulate`` accept."""


@contextmanager
def closing_executor(executor: E) -> Iterator[E]:
    """``executor``, closed on the way out when it has processes to close (pool, Ray)."""
    try:
        yield executor
    finally:
        close = getattr(executor, "close", None)
        if callable(close):
            close()


class SimulatedExecutor(Executor, Protocol):
    """An executor that holds its clients' data and kept state on this machine; checkpoints
    save and restore ``states``."""

    states: dict[int, ClientState]


def make_executor(
    name: str, program: ClientProgram, clients: Sequence[ClientData]
) -> SimulatedExecutor:
    """The executor called ``name`` for ``program`` over ``clients``.

    ``"vectorized"`` trains the cohort as one batched computation (PyTorch models that vmap can
    handle) and falls back to one client at a time, with a logged reason, for anything else.
    ``"process"`` runs clients on one worker process per CPU, each holding its clients' data;
    ``"ray"`` runs them on Ray actors (a local Ray, or the cluster ``RAY_ADDRESS`` names). Both
    hold processes: close them (``simulate`` does) or let garbage collection do it.
    """
    if name == "inprocess":
        return InProcessExecutor(program, clients)
    if name == "vectorized":
        from fedloom.executors.vectorized import VectorizedExecutor

        return VectorizedExecutor(program, clients)
    if name == "process":
        from fedloom.executors.pool import PoolExecutor

        return PoolExecutor(program, clients)
    if name == "ray":
        try:
            from fedloom.executors.ray_executor import RayExecutor
        except ImportError as error:
            raise MissingExtra('executor "ray"', "ray") from error

        return RayExecutor(program, clients)
    raise ValueError(f"executor must be one of {list(EXECUTORS)}, got {name!r}")


__all__ = [
    "EXECUTORS",
    "InProcessExecutor",
    "SimulatedExecutor",
    "closing_executor",
    "make_executor",
]
