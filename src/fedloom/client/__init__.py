"""What a client does with a broadcast: fedloom's local training loop, or a user's function."""

from fedloom.client.local_sgd import CONTROL, FEDNOVA_NORM, LocalSGD
from fedloom.client.work import ClientWork, FunctionWork, TrainFunction, custom

__all__ = [
    "CONTROL",
    "FEDNOVA_NORM",
    "ClientWork",
    "FunctionWork",
    "LocalSGD",
    "TrainFunction",
    "custom",
]
