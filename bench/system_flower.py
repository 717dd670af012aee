"""FedAvg on Flower's simulation engine (``flwr.simulation.run_simulation``, Ray backend).

Runs in Flower's own virtual environment (``bench/.venv-flower``), without fedloom. The
ServerApp runs Flower's message-based ``FedAvg`` strategy; each of ``clients`` virtual
SuperNodes runs the ClientApp of :mod:`flower_app` on its share of the shared data file, with
the same model and local SGD loop as the plain loop (:mod:`local_torch`). Ray gets all the
machine's CPUs and every simulated client one of them, so as many clients train at once as
there are cores.
"""

from __future__ import annotations

import os

from flower_app import client_app, server_app
from flwr.simulation import run_simulation
from workloads import Workload, runner_arguments


def main() -> None:
    args = runner_arguments(__doc__ or "")
    workload = Workload.from_json(args.workload)
    run_simulation(
        server_app=server_app(workload, os.path.abspath(args.data), os.path.abspath(args.result)),
        client_app=client_app,
        num_supernodes=workload.clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": os.cpu_count() or 1},
        },
    )


if __name__ == "__main__":
    main()
