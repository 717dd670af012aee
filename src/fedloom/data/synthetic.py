"""The Synthetic(alpha, beta) federated benchmark of FedProx.

From Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith (2020), "Federated Optimization in
Heterogeneous Networks" (MLSys), Section 5.1 and Appendix C.1, following the authors' generator
(``data/synthetic_*/generate_niid.py`` in github.com/litian96/FedProx).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedloom.data._checks import check_fraction, check_int, check_number
from fedloom.data.federated import ClientData, FederatedData
from fedloom.data.population import LazyClients

_SIZE_LOG_MEAN, _SIZE_LOG_STD, _SIZE_FLOOR = 4.0, 2.0, 50
_COVARIANCE_DECAY = 1.2


def synthetic(
    alpha: float,
    beta: float,
    *,
    clients: int = 30,
    seed: int = 0,
    dim: int = 60,
    classes: int = 10,
    test_fraction: float = 0.2,
    holdout: float = 0.2,
    lazy: bool = False,
    eval_devices: int = 200,
) -> FederatedData:
    """Devices whose models and inputs differ by ``alpha`` and ``beta``; one client per device.

    For device k: ``u_k ~ N(0, alpha)``, ``W_k, b_k ~ N(u_k, 1)`` elementwise;
    ``B_k ~ N(0, beta)``, ``v_k ~ N(B_k, 1)`` per coordinate; ``x ~ N(v_k, Sigma)`` with diagonal
    ``Sigma_jj = j^-1.2``; ``y = argmax(W_k^T x + b_k)`` (the argmax of the softmax). As in the
    authors' code, ``alpha`` and ``beta`` are standard deviations, and device sizes follow a power
    law: ``floor(LogNormal(4, 2)) + 50`` examples each. Larger ``beta`` spreads the devices'
    input means apart and so skews their label mixes; ``alpha`` moves all of a device's logits
    together, which changes ``W_k`` and ``b_k`` but not the argmax.

    Each device keeps ``floor(holdout * m_k)`` of its ``m_k`` examples for the central test set
    and splits the rest into train and a local test split of ``floor(test_fraction * m)``.
    Device k draws everything from its own stream, ``default_rng([seed, k])``, so values differ
    from the reference script's while following the same distributions, and any one device can
    be made alone.

    ``lazy=True`` makes each device's data only when a round samples it (memory grows with the
    cohort, not the population: 100,000 devices fit); the central test set is then the held-out
    share of the first ``eval_devices`` devices (devices are exchangeable, so that is a uniform
    sample of them), while ``lazy=False`` holds out from every device.
    """
    alpha = check_number("alpha", alpha, accepted="a finite number >= 0", ok=lambda v: v >= 0)
    beta = check_number("beta", beta, accepted="a finite number >= 0", ok=lambda v: v >= 0)
    clients = check_int("clients", clients, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    dim = check_int("dim", dim, minimum=1)
    classes = check_int("classes", classes, minimum=2)
    test_fraction = check_fraction("test_fraction", test_fraction)
    holdout = check_fraction("holdout", holdout)
    eval_devices = check_int("eval_devices", eval_devices, minimum=1)
    if not isinstance(lazy, bool):
        raise ValueError(f"lazy must be true or false, got {lazy!r}")

    generator = _Devices(alpha, beta, seed, dim, classes, test_fraction, holdout)
    name = f"synthetic({alpha:g}, {beta:g})"
    held_from = range(min(eval_devices, clients)) if lazy else range(clients)
    held = [generator.held_out(k) for k in held_from]
    test_x = np.concatenate([x for x, _ in held])
    test_y = np.concatenate([y for _, y in held])
    population = (
        LazyClients(clients, generator.client)
        if lazy
        else tuple(map(generator.client, range(clients)))
    )
    return FederatedData(name, population, test_x, test_y, classes)


@dataclass(frozen=True)
class _Devices:
    """Makes device k's data from ``default_rng([seed, k])`` alone."""

    alpha: float
    beta: float
    seed: int
    dim: int
    classes: int
    test_fraction: float
    holdout: float

    def _examples(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, k])
        size = int(rng.lognormal(_SIZE_LOG_MEAN, _SIZE_LOG_STD)) + _SIZE_FLOOR
        model_mean = rng.normal(0.0, self.alpha)
        input_centre = rng.normal(0.0, self.beta)
        weights = rng.normal(model_mean, 1.0, (self.dim, self.classes))
        bias = rng.normal(model_mean, 1.0, self.classes)
        mean = rng.normal(input_centre, 1.0, self.dim)
        scale = np.arange(1, self.dim + 1, dtype=np.float64) ** (-_COVARIANCE_DECAY / 2)
        x = mean + scale * rng.standard_normal((size, self.dim))
        y = np.argmax(x @ weights + bias, axis=1).astype(np.int64)
        order = rng.permutation(size)
        return x.astype(np.float32)[order], y[order]

    def _cuts(self, size: int) -> tuple[int, int]:
        held = math.floor(self.holdout * size + 1e-9)
        test = math.floor(self.test_fraction * (size - held) + 1e-9)
        return held, held + test

    def held_out(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self._examples(k)
        held, _ = self._cuts(len(y))
        return x[:held], y[:held]

    def client(self, k: int) -> ClientData:
        x, y = self._examples(k)
        held, test = self._cuts(len(y))
        return ClientData(k, x[test:], y[test:], x[held:test], y[held:test])
