"""Where a cohort's tasks run: one client after another in this process, or a whole cohort at once
as one batched PyTorch computation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fedloom.algorithms import ClientProgram
from fedloom.core.messages import ClientState
from fedloom.data import ClientData
from fedloom.engine import Executor
from fedloom.executors.inprocess import InProcessExecutor

EXECUTORS = ("inprocess", "vectorized", "process")
"""Executor names that run files and ``simulate`` accept."""


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
    it is cleaned up when garbage-collected or at exit.
    """
    if name == "inprocess":
        return InProcessExecutor(program, clients)
    if name == "vectorized":
        from fedloom.executors.vectorized import VectorizedExecutor

        return VectorizedExecutor(program, clients)
    if name == "process":
        from fedloom.executors.pool import PoolExecutor

        return PoolExecutor(program, clients)
    raise ValueError(f"executor must be one of {list(EXECUTORS)}, got {name!r}")


__all__ = ["EXECUTORS", "InProcessExecutor", "SimulatedExecutor", "make_executor"]
