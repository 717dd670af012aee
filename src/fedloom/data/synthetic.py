"""The Synthetic(alpha, beta) federated benchmark of FedProx.

From Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith (2020), "Federated Optimization in
Heterogeneous Networks" (MLSys), Section 5.1 and Appendix C.1, following the authors' generator
(``data/synthetic_*/generate_niid.py`` in github.com/litian96/FedProx).
"""

from __future__ import annotations

import numpy as np

from fedloom.data._checks import check_fraction, check_int, check_number
from fedloom.data.federated import FederatedData, federate, group_indices, holdout_split

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
    The draws use NumPy's ``default_rng(seed)``, so values differ from the reference script's
    while following the same distributions.
    """
    alpha = check_number("alpha", alpha, accepted="a finite number >= 0", ok=lambda v: v >= 0)
    beta = check_number("beta", beta, accepted="a finite number >= 0", ok=lambda v: v >= 0)
    clients = check_int("clients", clients, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    dim = check_int("dim", dim, minimum=1)
    classes = check_int("classes", classes, minimum=2)
    test_fraction = check_fraction("test_fraction", test_fraction)
    holdout = check_fraction("holdout", holdout)

    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(_SIZE_LOG_MEAN, _SIZE_LOG_STD, clients).astype(np.int64) + _SIZE_FLOOR
    model_means = rng.normal(0.0, alpha, clients)
    input_centres = rng.normal(0.0, beta, clients)
    scale = np.arange(1, dim + 1, dtype=np.float64) ** (-_COVARIANCE_DECAY / 2)
    xs, ys = [], []
    for k in range(clients):
        weights = rng.normal(model_means[k], 1.0, (dim, classes))
        bias = rng.normal(model_means[k], 1.0, classes)
        mean = rng.normal(input_centres[k], 1.0, dim)
        x = mean + scale * rng.standard_normal((int(sizes[k]), dim))
        xs.append(x.astype(np.float32))
        ys.append(np.argmax(x @ weights + bias, axis=1).astype(np.int64))
    devices = np.repeat(np.arange(clients), sizes)
    kept, held = holdout_split(devices, holdout, rng)
    parts = [kept[members] for members in group_indices(devices[kept])]
    return federate(
        name=f"synthetic({alpha:g}, {beta:g})",
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        num_classes=classes,
        parts=parts,
        held=held,
        test_fraction=test_fraction,
        rng=rng,
    )
