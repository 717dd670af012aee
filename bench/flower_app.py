"""Flower's ServerApp and ClientApp for the benchmark (see :mod:`system_flower`).

They live in an importable module rather than in the script that ``python`` runs as
``__main__``, so that Ray's workers can unpickle the ClientApp's functions by reference.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from local_torch import accuracy, mlp, one_thread, train_locally
from torch.nn.utils import vector_to_parameters
from workloads import Partition, Timeline, Workload, read_partition, write_result

client_app = ClientApp()


@cache
def shared_data(path: str) -> Partition:
    """The data file, read once per Ray worker process."""
    return read_partition(path)


def model_for(workload: Workload, data: Partition) -> torch.nn.Module:
    return mlp(data.test_x.shape[1], workload.hidden, data.num_classes)


@client_app.train()
def train(message: Message, context: Context) -> Message:
    one_thread()
    config = message.content["config"]
    workload = Workload.from_json(str(config["workload"]))
    data = shared_data(str(config["data"]))
    # The server names the client each node plays this round (see ReplayedFedAvg).
    client = int(config["client"])
    model = model_for(workload, data)
    model.load_state_dict(message.content["arrays"].to_torch_state_dict())
    seed = hash((workload.seed, int(config["server-round"]), client)) % 2**63
    x, y = torch.from_numpy(data.xs[client]), torch.from_numpy(data.ys[client])
    train_locally(
        model,
        x,
        y,
        epochs=workload.epochs,
        batch_size=workload.batch_size,
        lr=workload.lr,
        generator=torch.Generator().manual_seed(seed),
    )
    reply = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"num-examples": len(y)}),
        }
    )
    return Message(content=reply, reply_to=message)


class ReplayedFedAvg(FedAvg):
    """Flower's ``FedAvg``, with each round's cohort taken from the data file's schedule.

    Flower draws a cohort by sampling node ids at random, and its simulation engine gives each
    node a partition id the ServerApp cannot see. So node ``k`` of the sorted node ids plays
    client ``k`` for the whole run, and each round's train message tells its node which client
    that is (``config["client"]``); training, replies and aggregation stay Flower's own.
    """

    def __init__(self, cohorts: list[list[int]], **options: Any) -> None:
        super().__init__(**options)
        self.cohorts = cohorts

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        _, nodes = sample_nodes(grid, self.min_available_nodes, 0)  # waits for every node
        by_client = sorted(nodes)
        messages = []
        for client in self.cohorts[server_round - 1]:
            own = ConfigRecord({**config, "server-round": server_round, "client": client})
            record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: own})
            messages.append(
                Message(
                    content=record,
                    message_type=MessageType.TRAIN,
                    dst_node_id=by_client[client],
                )
            )
        return messages


def server_app(workload: Workload, data_path: str, result_path: str) -> ServerApp:
    """FedAvg for ``workload.rounds`` rounds, scoring each global model on the central test set."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        one_thread()
        data = shared_data(data_path)
        model = model_for(workload, data)
        vector_to_parameters(torch.from_numpy(data.initial.copy()), model.parameters())
        test_x, test_y = torch.from_numpy(data.test_x), torch.from_numpy(data.test_y)
        timeline = Timeline()
        scores: list[float] = []

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            model.load_state_dict(arrays.to_torch_state_dict())
            scores.append(accuracy(model, test_x, test_y))
            if server_round == 0:
                timeline.start()
            else:
                timeline.end_round()
            return MetricRecord({"accuracy": scores[-1]})

        replies: list[int] = []

        def count_replies(records: list[RecordDict], weighted_by: str) -> MetricRecord:
            replies.append(len(records))
            return MetricRecord({"replies": len(records)})

        strategy = ReplayedFedAvg(
            data.cohorts.tolist(),
            fraction_train=workload.cohort / workload.clients,
            fraction_evaluate=0.0,
            min_train_nodes=workload.cohort,
            min_available_nodes=workload.clients,
            train_metrics_aggr_fn=count_replies,
        )
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=workload.rounds,
            train_config=ConfigRecord({"workload": workload.to_json(), "data": data_path}),
            evaluate_fn=evaluate,
        )
        # Flower logs a failed client and carries on: only a run where every round aggregated
        # the whole cohort counts.
        if replies != [workload.cohort] * workload.rounds:
            raise RuntimeError(f"replies per round were {replies}, not {workload.cohort} each")
        write_result(result_path, timeline, scores[-1], flwr_version=flwr_version())

    return app


def flwr_version() -> str:
    from importlib.metadata import version

    return version("flwr")
