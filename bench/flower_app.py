"""Flower's ServerApp and ClientApp for the benchmark (see :mod:`system_flower`).

They live in an importable module rather than in the script that ``python`` runs as
``__main__``, so that Ray's workers can unpickle the ClientApp's functions by reference.
"""

from __future__ import annotations

import random
from functools import cache

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from local_torch import accuracy, mlp, one_thread, train_locally
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
    client = int(context.node_config["partition-id"])
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


def server_app(workload: Workload, data_path: str, result_path: str) -> ServerApp:
    """FedAvg for ``workload.rounds`` rounds, scoring each global model on the central test set."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        one_thread()
        random.seed(workload.seed)  # FedAvg samples its cohort with the random module
        torch.manual_seed(workload.seed)
        data = shared_data(data_path)
        model = model_for(workload, data)
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

        strategy = FedAvg(
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
