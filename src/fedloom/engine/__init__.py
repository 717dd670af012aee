"""The engine: one round as a function, the loop around it, cohort sampling, and history."""

from fedloom.engine.buffered import Buffered, train_buffered
from fedloom.engine.history import History, Rejection, RoundRecord
from fedloom.engine.loop import Schedule, Target, schedule, train
from fedloom.engine.rounds import ServerState, init_state, run_round
from fedloom.engine.sampling import Replay, Sampler, fixed, fraction, poisson, replay
from fedloom.engine.tasks import (
    EvaluateTask,
    Evaluation,
    Executor,
    Failure,
    Reply,
    Task,
    TrainTask,
)

__all__ = [
    "Buffered",
    "EvaluateTask",
    "Evaluation",
    "Executor",
    "Failure",
    "History",
    "Rejection",
    "Replay",
    "Reply",
    "RoundRecord",
    "Sampler",
    "Schedule",
    "ServerState",
    "Target",
    "Task",
    "TrainTask",
    "fixed",
    "fraction",
    "init_state",
    "poisson",
    "replay",
    "run_round",
    "schedule",
    "train",
    "train_buffered",
]
