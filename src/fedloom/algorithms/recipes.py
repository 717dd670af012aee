"""Recipes: each algorithm is a few lines that pick client work, reducer and server optimizer.

No recipe subclasses or copies another: FedAdam is FedAvg with Adam on the server (Reddi et al.
2021), FedProx is FedAvg with a proximal term in the local loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fedloom.algorithms.algorithm import Algorithm
from fedloom.algorithms.corrections import FedNovaScale, ScaffoldControl
from fedloom.client.local_sgd import LocalSGD
from fedloom.client.work import ClientWork
from fedloom.core import validate
from fedloom.optimizers import SGD, Adaptive, Momentum
from fedloom.reducers import Mean


def fedavg(work: ClientWork, *, server_lr: float = 1.0) -> Algorithm:
    """FedAvg (McMahan et al. 2017, *Communication-Efficient Learning of Deep Networks from
    Decentralized Data*): example-weighted mean of client updates, server step ``server_lr``."""
    return Algorithm("fedavg", work, server_optimizer=SGD(lr=server_lr))


def fedavgm(work: ClientWork, *, server_lr: float = 1.0, momentum: float = 0.9) -> Algorithm:
    """FedAvgM (Hsu et al. 2019): FedAvg with server momentum."""
    return Algorithm("fedavgm", work, server_optimizer=Momentum(lr=server_lr, beta=momentum))


def fedadam(
    work: ClientWork,
    *,
    server_lr: float = 1e-2,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
) -> Algorithm:
    """FedAdam (Reddi et al. 2021): FedAvg whose server applies Adam to the mean update."""
    opt = Adaptive("adam", lr=server_lr, beta1=beta1, beta2=beta2, tau=tau)
    return Algorithm("fedadam", work, server_optimizer=opt)


def fedyogi(
    work: ClientWork,
    *,
    server_lr: float = 1e-2,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
) -> Algorithm:
    """FedYogi (Reddi et al. 2021): FedAvg whose server applies Yogi to the mean update."""
    opt = Adaptive("yogi", lr=server_lr, beta1=beta1, beta2=beta2, tau=tau)
    return Algorithm("fedyogi", work, server_optimizer=opt)


def fedadagrad(
    work: ClientWork, *, server_lr: float = 1e-1, beta1: float = 0.0, tau: float = 1e-3
) -> Algorithm:
    """FedAdagrad (Reddi et al. 2021): FedAvg whose server applies Adagrad to the mean update."""
    opt = Adaptive("adagrad", lr=server_lr, beta1=beta1, tau=tau)
    return Algorithm("fedadagrad", work, server_optimizer=opt)


def fedprox(work: ClientWork, *, mu: float, server_lr: float = 1.0) -> Algorithm:
    """FedProx (Li et al. 2020): local objective plus ``μ/2 ‖w − w_t‖²``."""
    validate.non_negative("mu", mu)
    local = _local_sgd("fedprox", work)
    return Algorithm("fedprox", replace(local, prox_mu=mu), server_optimizer=SGD(lr=server_lr))


def scaffold(work: ClientWork, *, server_lr: float = 1.0) -> Algorithm:
    """SCAFFOLD with option-II control variates (Karimireddy et al. 2020); server step
    ``x ← x + η_g mean(Δy)`` over the cohort, unweighted as in the paper."""
    local = _local_sgd("scaffold", work)
    return Algorithm(
        "scaffold",
        replace(local, control_variates=True),
        server_optimizer=SGD(lr=server_lr),
        reducer=Mean(),
        correction=ScaffoldControl(),
    )


def fednova(work: ClientWork, *, server_lr: float = 1.0) -> Algorithm:
    """FedNova (Wang et al. 2020): normalized averaging that removes the bias towards clients
    that take more local steps."""
    local = _local_sgd("fednova", work)
    return Algorithm(
        "fednova",
        replace(local, normalized=True),
        server_optimizer=SGD(lr=server_lr),
        correction=FedNovaScale(),
    )


ALGORITHMS: dict[str, Callable[..., Algorithm]] = {
    "fedavg": fedavg,
    "fedavgm": fedavgm,
    "fedadam": fedadam,
    "fedyogi": fedyogi,
    "fedadagrad": fedadagrad,
    "fedprox": fedprox,
    "scaffold": scaffold,
    "fednova": fednova,
}


def algorithm(name: str, work: ClientWork, **options: Any) -> Algorithm:
    """Build an algorithm by name (as a run file does): ``algorithm("fedprox", work, mu=0.01)``."""
    validate.one_of("algorithm name", name, ALGORITHMS)
    return ALGORITHMS[name](work, **options)


def _local_sgd(recipe: str, work: ClientWork) -> LocalSGD:
    if not isinstance(work, LocalSGD):
        raise ValueError(
            f"{recipe} changes fedloom's local training loop, so it needs LocalSGD client work "
            f"(fedloom.local_sgd or fedloom.torch.local_sgd), got {type(work).__name__}"
        )
    return work
