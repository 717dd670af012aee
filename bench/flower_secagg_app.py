"""Flower's SecAgg+ workflow on no-training clients, for :mod:`system_flower_secagg`.

The ClientApp answers every fit with a fixed random vector of the broadcast's size (seeded by
its partition id), so a round measures aggregation alone. Clients whose partition id is below
the ``drop-below`` fit setting raise instead: under ``secaggplus_mod`` fit runs in the
collect-masked-vectors stage, so they vanish after sharing keys, and the workflow must recover
their masks. The apps live in an importable module (not the script ``python`` runs as
``__main__``) so that Ray's workers can unpickle them by reference.
"""

from __future__ import annotations

import time
from functools import cache

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.default_workflows import default_fit_workflow

NDArrays = list[np.ndarray]


@cache
def fixed_update(partition: int, size: int) -> np.ndarray:
    return np.random.default_rng(partition).uniform(-0.01, 0.01, size).astype(np.float32)


class FixedUpdate(NumPyClient):
    def __init__(self, partition: int):
        self.partition = partition

    def fit(self, parameters: NDArrays, config: dict[str, object]) -> tuple[NDArrays, int, dict]:
        if self.partition < int(str(config["drop-below"])):
            raise ConnectionError(f"client {self.partition} drops out")
        size = parameters[0].size
        return [parameters[0] + fixed_update(self.partition, size)], 10, {}


def client_fn(context: Context) -> object:
    return FixedUpdate(int(context.node_config["partition-id"])).to_client()


secure_client_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
plain_client_app = ClientApp(client_fn=client_fn)


def server_app(
    *,
    clients: int,
    dims: int,
    rounds: int,
    drop: int,
    secure: bool,
    num_shares: int,
    threshold: int,
    seconds: list[float],
    accepted: list[int],
    timeout: float,
) -> ServerApp:
    """FedAvg over every client for ``rounds`` rounds, timing each fit round into ``seconds``."""
    app = ServerApp()

    @app.main()
    def main(grid: object, context: Context) -> None:
        def aggregate_fit(server_round, results, failures):
            accepted.append(sum(r.num_examples for _, r in results) // 10)
            return FedAvg.aggregate_fit(strategy, server_round, results, failures)

        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=clients,
            min_available_clients=clients,
            accept_failures=True,
            initial_parameters=ndarrays_to_parameters([np.zeros(dims, dtype=np.float32)]),
            on_fit_config_fn=lambda _round: {"drop-below": drop},
        )
        strategy.aggregate_fit = aggregate_fit
        fit = (
            SecAggPlusWorkflow(
                num_shares=num_shares, reconstruction_threshold=threshold, timeout=timeout
            )
            if secure
            else default_fit_workflow
        )

        def timed_fit(grid: object, context: Context) -> None:
            started = time.perf_counter()
            fit(grid, context)
            seconds.append(time.perf_counter() - started)

        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy
        )
        DefaultWorkflow(fit_workflow=timed_fit)(grid, legacy)

    return app
