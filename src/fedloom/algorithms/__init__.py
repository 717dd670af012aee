"""Federated algorithms as values, and the recipes that build them."""

from fedloom.algorithms.algorithm import Algorithm, ClientProgram, ServerCorrection
from fedloom.algorithms.recipes import (
    ALGORITHMS,
    algorithm,
    fedadagrad,
    fedadam,
    fedavg,
    fedavgm,
    fednova,
    fedprox,
    fedyogi,
    scaffold,
)

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "ClientProgram",
    "ServerCorrection",
    "algorithm",
    "fedadagrad",
    "fedadam",
    "fedavg",
    "fedavgm",
    "fednova",
    "fedprox",
    "fedyogi",
    "scaffold",
]
