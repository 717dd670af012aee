"""One FedAvg run of no-training clients on Flower's simulation engine, plain or through its
SecAgg+ workflow (``flwr.server.workflow.SecAggPlusWorkflow`` with the ``secaggplus_mod``
client mod); prints the seconds of each fit round as JSON. Runs in Flower's own environment
(``bench/.venv-flower``), started by :mod:`secagg`. Ray gets all the machine's CPUs and every
simulated client one of them.

    python bench/system_flower_secagg.py --clients 100 --dims 100000 --drop 10 --secure
"""

from __future__ import annotations

import argparse
import json
import os

from flower_secagg_app import plain_client_app, secure_client_app, server_app
from flwr.simulation import run_simulation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--dims", type=int, required=True)
    parser.add_argument("--drop", type=int, default=0, help="clients that drop out")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--secure", action="store_true")
    parser.add_argument("--num-shares", type=int, default=23, help="k + 1, itself included")
    parser.add_argument("--threshold", type=int, default=12)
    parser.add_argument("--stage-timeout", type=float, default=300.0)
    args = parser.parse_args()
    seconds: list[float] = []
    accepted: list[int] = []
    run_simulation(
        server_app=server_app(
            clients=args.clients,
            dims=args.dims,
            rounds=args.rounds,
            drop=args.drop,
            secure=args.secure,
            num_shares=args.num_shares,
            threshold=args.threshold,
            seconds=seconds,
            accepted=accepted,
            timeout=args.stage_timeout,
        ),
        client_app=secure_client_app if args.secure else plain_client_app,
        num_supernodes=args.clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": os.cpu_count() or 1},
        },
    )
    print("RESULT " + json.dumps({"seconds": seconds, "accepted": accepted}))


if __name__ == "__main__":
    main()
