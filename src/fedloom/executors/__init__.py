"""Where a cohort's tasks run: in this process now; the simulator's executors build on it."""

from fedloom.executors.inprocess import InProcessExecutor

__all__ = ["InProcessExecutor"]
