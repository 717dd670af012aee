"""Accuracy against epsilon for user-level DP-FedAvg on MNIST-1D spread over many clients.

The setting of issue 7's evidence: MNIST-1D (Greydanus and Kobak 2024) split IID over 5,000
clients, Poisson sampling with an expected cohort of 250, delta = 1/N^1.1, FedAvg with server
momentum (as McMahan et al. 2018 train DP-FedAvg) and a 40-64-10 MLP. For each target epsilon the
noise multiplier comes from dp-accounting's calibration for the run's rounds; every run's final
epsilon is the one the engine reported. The non-private row is the same setup without clipping
or noise.

    OMP_NUM_THREADS=1 python examples/dp_utility.py --markdown docs/privacy-utility.md
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import fedloom as fl
from fedloom import privacy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--cohort", type=int, default=250, help="expected cohort (Poisson)")
    parser.add_argument("--samples", type=int, default=40_000, help="MNIST-1D examples")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--clip", type=float, default=0.3)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)

    data = fl.data.mnist1d(num_samples=args.samples, seed=args.seed).split(
        fl.data.iid(), clients=args.clients, seed=args.seed, test_fraction=0.0, holdout=0.1
    )
    rate = args.cohort / args.clients
    delta = privacy.default_delta(args.clients)
    sampling = privacy.poisson_sampling(population=args.clients, rate=rate)
    work = fl.torch.local_sgd(fl.torch.mlp(40, [64], 10), lr=0.1, epochs=2, batch_size=8)

    def run(epsilon: float | None) -> tuple[float, float, float]:
        algorithm = fl.fedavgm(work, server_lr=1.0, momentum=0.9)
        budget = None
        z = 0.0
        if epsilon is not None:
            z = privacy.calibrate_noise(sampling, rounds=args.rounds, epsilon=epsilon, delta=delta)
            stage = privacy.central_gaussian(clip=args.clip, noise_multiplier=z, sampling=sampling)
            algorithm = algorithm.with_privacy(stage)
            budget = privacy.budget(max_epsilon=epsilon, delta=delta)
        history = fl.simulate(
            algorithm, data, rounds=args.rounds, cohort=fl.poisson(rate), seed=args.seed,
            federated_eval=False, executor="vectorized", budget=budget, eval_every=10,
        )  # fmt: skip
        accuracy = [a for a in history.metric("test_accuracy") if a == a]
        spent = history.metric("dp.epsilon")[-1] if epsilon is not None else float("inf")
        return z, spent, max(accuracy[-1:])

    rows = []
    started = time.perf_counter()
    _, _, baseline = run(None)
    rows.append(("no DP", "-", "-", baseline))
    print(f"no DP: accuracy {baseline:.4f}", flush=True)
    for epsilon in args.epsilons:
        z, spent, accuracy = run(epsilon)
        rows.append((f"{epsilon:g}", f"{z:.3f}", f"{spent:.3f}", accuracy))
        print(
            f"epsilon {epsilon:g}: z={z:.3f} spent={spent:.3f} accuracy {accuracy:.4f}", flush=True
        )

    lines = [
        f"MNIST-1D ({args.samples} examples) over {args.clients} clients, Poisson sampling with "
        f"expected cohort {args.cohort}, {args.rounds} rounds, delta = {delta:.3g} "
        f"(1/N^1.1), clip {args.clip}, FedAvgM (server lr 1, momentum 0.9), MLP 40-64-10, "
        f"2 local epochs; RDP accountant. `python {' '.join(sys.argv)}` "
        f"({time.perf_counter() - started:.0f} s).",
        "",
        "| target epsilon | noise multiplier z | epsilon spent | test accuracy | of non-private |",
        "|---|---|---|---|---|",
    ]
    for target, z_text, spent_text, accuracy in rows:
        share = accuracy / baseline if baseline > 0 else float("nan")
        lines.append(f"| {target} | {z_text} | {spent_text} | {accuracy:.4f} | {share:.0%} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown is not None:
        args.markdown.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
