"""FedAvg, FedProx and SCAFFOLD on label-skewed digits, beside a centralized upper bound.

    python examples/noniid.py --rounds 30 [--markdown docs/results.md]

Digits (scikit-learn, ships with the install), split over 50 clients by Dirichlet(0.1) label
skew, an MLP with one hidden layer, every client in every round, 2 local epochs. The centralized
baseline trains the same model with the same local loop on the union of the clients' training
data, for as many epochs as a federated client makes in the whole run.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import fedloom as fl
from fedloom.data import ClientData, FederatedData


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    data = fl.data.digits().split(
        fl.data.dirichlet(args.alpha), clients=args.clients, seed=args.seed
    )
    report = data.report()
    print(
        f"{len(data)} clients, Dirichlet({args.alpha}) label skew: mean total-variation "
        f"distance to the pooled label distribution = {report.skew:.3f}"
    )

    train = fl.torch.local_sgd(fl.torch.mlp(64, [64], 10), lr=0.2, epochs=2, batch_size=16)
    algorithms = {
        "FedAvg": fl.fedavg(train),
        "FedProx (mu=0.01)": fl.fedprox(train, mu=0.01),
        "SCAFFOLD": fl.scaffold(train),
        "FedNova": fl.fednova(train),
        "FedAdam (server lr=0.01)": fl.fedadam(train, server_lr=0.01),
    }
    rows = []
    for name, algorithm in algorithms.items():
        started = time.perf_counter()
        history = fl.simulate(
            algorithm,
            data,
            rounds=args.rounds,
            cohort=len(data),
            seed=args.seed,
            federated_eval=False,
        )
        seconds = time.perf_counter() - started
        accuracy = history.metric("test_accuracy")
        rows.append((name, accuracy[-1], max(accuracy), seconds))
        print(f"{name:26s} final {accuracy[-1]:.4f}  best {max(accuracy):.4f}  ({seconds:.1f} s)")

    # Centralized: one client holding everyone's training data, same model and loop.
    x, y = data.pooled()
    pooled = FederatedData(
        "pooled", (ClientData(0, x, y, x[:0], y[:0]),), data.test_x, data.test_y, data.num_classes
    )
    epochs = args.rounds * train.epochs  # type: ignore[operator]
    started = time.perf_counter()
    central = fl.simulate(
        fl.fedavg(replace(train, epochs=1)),
        pooled,
        rounds=epochs,
        cohort=1,
        seed=args.seed,
        federated_eval=False,
        eval_every=epochs,
    )
    seconds = time.perf_counter() - started
    final = central.last("test_accuracy")
    rows.append((f"Centralized ({epochs} epochs, upper bound)", final, final, seconds))
    print(f"centralized                final {final:.4f}  ({seconds:.1f} s)")

    table = [
        "| algorithm | final test accuracy | best test accuracy | seconds |",
        "|---|---:|---:|---:|",
        *(f"| {n} | {f:.4f} | {b:.4f} | {s:.1f} |" for n, f, b, s in rows),
    ]
    command = (
        f"python examples/noniid.py --rounds {args.rounds} --clients {args.clients} "
        f"--alpha {args.alpha} --seed {args.seed}"
    )
    text = "\n".join([f"Made by `{command}`.", "", *table, ""])
    print()
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
