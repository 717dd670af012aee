"""FedAvg with ``fedloom.simulate`` on one executor (``--executor inprocess``, ``vectorized``, …).

Digits workloads read the shared data file into a ``FederatedData`` and replay its cohort
schedule (``fedloom.replay``) from its initial model (``simulate(..., params=...)``); the
Synthetic(1, 1)
workload generates its devices here, in the measured process, with fedloom's generator
(the time that takes is reported as ``data_seconds``): on demand, as each round samples them,
where this fedloom offers ``synthetic(lazy=True)``, otherwise all at once.
"""

from __future__ import annotations

import inspect
import time

import numpy as np
import torch
from workloads import (
    Partition,
    Timeline,
    Workload,
    read_partition,
    runner_arguments,
    write_result,
)

import fedloom as fl
from fedloom.data import ClientData, FederatedData


def lazy_synthetic() -> bool:
    """Whether this fedloom can make Synthetic devices on demand (``synthetic(lazy=True)``)."""
    return "lazy" in inspect.signature(fl.data.synthetic).parameters


def shared_clients(data: Partition) -> FederatedData:
    """The data file as fedloom clients, each with its whole share as training data."""
    no_test = np.empty((0, data.test_x.shape[1]), np.float32)
    clients = tuple(
        ClientData(k, x, y, no_test, np.empty(0, np.int64))
        for k, (x, y) in enumerate(zip(data.xs, data.ys, strict=True))
    )
    return FederatedData("digits", clients, data.test_x, data.test_y, data.num_classes)


def algorithm_for(workload: Workload, data: FederatedData) -> fl.Algorithm:
    features = data.test_x.shape[1]
    classes = data.num_classes
    assert classes is not None
    if workload.dataset == "synthetic":
        work = fl.local_sgd(
            fl.SoftmaxRegression(features, classes),
            lr=workload.lr,
            epochs=workload.epochs,
            batch_size=workload.batch_size,
        )
    else:
        work = fl.torch.local_sgd(
            fl.torch.mlp(features, list(workload.hidden), classes),
            lr=workload.lr,
            epochs=workload.epochs,
            batch_size=workload.batch_size,
        )
    return fl.fedavg(work)


def main() -> None:
    args = runner_arguments(__doc__ or "", "executor")
    torch.set_num_threads(1)
    workload = Workload.from_json(args.workload)
    generating = time.time()
    cohort: int | fl.engine.Sampler = workload.cohort
    params = None
    if workload.dataset == "synthetic":
        lazy = {"lazy": True} if lazy_synthetic() else {}
        data = fl.data.synthetic(1.0, 1.0, clients=workload.clients, seed=workload.seed, **lazy)
    else:
        shared = read_partition(args.data)
        data = shared_clients(shared)
        cohort, params = fl.replay(shared.cohorts), shared.initial
    data_seconds = time.time() - generating

    timeline = Timeline()
    timeline.start()
    history = fl.simulate(
        algorithm_for(workload, data),
        data,
        rounds=workload.rounds,
        cohort=cohort,
        seed=workload.seed,
        executor=args.executor,
        params=params,
        federated_eval=False,
        on_round=lambda record, state: timeline.end_round(),
    )
    write_result(
        args.result,
        timeline,
        history.metric("test_accuracy")[-1],
        data_seconds=data_seconds,
    )


if __name__ == "__main__":
    main()
