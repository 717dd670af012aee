"""fedloom: federated learning whose algorithms are values that run anywhere.

A user picks four things independently: data (``fedloom.data``), client work
(``fedloom.local_sgd`` or ``fedloom.torch.local_sgd``), an algorithm recipe (``fedavg``,
``fedprox``, ``scaffold``…) and where it runs (``simulate`` here, ``serve`` over gRPC with
sites that join from their own machines).
"""

from fedloom import compression, data, engine, optimizers, reducers, robust, stages
from fedloom.algorithms import (
    ALGORITHMS,
    Algorithm,
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
from fedloom.client import ClientWork, LocalSGD, custom
from fedloom.core.layout import Field, Layout
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.core.model import Model
from fedloom.engine import History, RoundRecord, Target, fixed, fraction, poisson, replay
from fedloom.linear import LinearRegression, SoftmaxRegression
from fedloom.secagg import secure_sum
from fedloom.simulation import simulate
from fedloom.stages import clip_by_norm

local_sgd = LocalSGD


def __getattr__(name: str) -> object:
    # ``fl.torch`` without importing PyTorch for users who never touch it.
    if name in ("torch", "privacy"):  # loaded on first use: PyTorch, dp-accounting
        import importlib

        return importlib.import_module(f"fedloom.{name}")
    if name == "serve":  # gRPC and cryptography load only for a deployment
        from fedloom.deploy import serve_algorithm

        return serve_algorithm
    raise AttributeError(f"module 'fedloom' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Broadcast",
    "ClientResult",
    "ClientWork",
    "Field",
    "History",
    "Layout",
    "LinearRegression",
    "LocalSGD",
    "Model",
    "RoundRecord",
    "SoftmaxRegression",
    "Target",
    "__version__",
    "algorithm",
    "clip_by_norm",
    "compression",
    "custom",
    "data",
    "engine",
    "fedadagrad",
    "fedadam",
    "fedavg",
    "fedavgm",
    "fednova",
    "fedprox",
    "fedyogi",
    "fixed",
    "fraction",
    "local_sgd",
    "optimizers",
    "poisson",
    "reducers",
    "replay",
    "robust",
    "scaffold",
    "secure_sum",
    "serve",
    "simulate",
    "stages",
]
