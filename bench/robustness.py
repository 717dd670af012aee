"""The robustness table: final digits accuracy under each attack, for the plain mean and every
robust reducer, with a fifth of the clients malicious (``make bench`` runs it).

A small PyTorch MLP (64 → 32 → 10) on scikit-learn's digits, 20 IID clients all sampled every
round, 4 of them malicious (``attackers = 4`` for the reducers that take it). Each cell is the
final central test accuracy after ``--rounds`` rounds, averaged over ``--seeds`` seeds; the
backdoor column adds the backdoor accuracy (the share of triggered non-target test inputs
classified as the target).

    python bench/robustness.py                               # writes docs/robustness-results.md
    python bench/robustness.py --rounds 2 --reducers mean,median --out /tmp/t.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import fedloom as fl
from fedloom import robust
from fedloom.attacks import ATTACKS, Attack, simulate_under_attack
from fedloom.data import FederatedData
from fedloom.reducers import Reducer

ROOT = Path(__file__).resolve().parent.parent
CLIENTS, FRACTION, ATTACKERS = 20, 0.2, 4
BOUND = 0.3
"""Norm bound and clipping radius: a little above the honest updates' norms on this task."""

REDUCERS: dict[str, Callable[[], Reducer | None]] = {
    "mean": lambda: None,
    "median": lambda: robust.median(attackers=ATTACKERS),
    "trimmed_mean": lambda: robust.trimmed_mean(attackers=ATTACKERS),
    "krum": lambda: robust.krum(attackers=ATTACKERS),
    "multi_krum": lambda: robust.multi_krum(attackers=ATTACKERS),
    "bulyan": lambda: robust.bulyan(attackers=ATTACKERS),
    "geometric_median": lambda: robust.geometric_median(attackers=ATTACKERS),
    "centered_clipping": lambda: robust.centered_clipping(
        radius=BOUND, iterations=3, attackers=ATTACKERS
    ),
    "norm_bounded_mean": lambda: robust.norm_bounded_mean(bound=BOUND),
}
UNTARGETED = ("sign_flip", "scaling", "gaussian", "label_flip", "alie", "ipm")


def final(
    data: FederatedData, reducer: Reducer | None, attack: Attack | None, rounds: int, seed: int
) -> dict[str, float]:
    work = fl.torch.local_sgd(fl.torch.mlp(64, [32], 10), lr=0.1, batch_size=16)
    algorithm = fl.fedavg(work) if reducer is None else fl.fedavg(work).with_reducer(reducer)
    outcome = simulate_under_attack(
        algorithm, data, attack=attack, fraction=FRACTION, rounds=rounds, cohort=CLIENTS,
        seed=seed, eval_every=rounds,
    )  # fmt: skip
    return dict(outcome.history.records[-1].metrics)


def table(reducers: Sequence[str], attacks: Sequence[str], rounds: int, seeds: int) -> str:
    datasets = [
        fl.data.digits().split(fl.data.iid(), clients=CLIENTS, seed=s) for s in range(seeds)
    ]
    columns = ["none", *attacks]
    cells: dict[tuple[str, str], tuple[float, float | None]] = {}
    for name in reducers:
        for column in columns:
            runs = []
            for seed, data in enumerate(datasets):
                attack = None if column == "none" else ATTACKS[column]()
                runs.append(final(data, REDUCERS[name](), attack, rounds, seed))
            acc = statistics.mean(r["test_accuracy"] for r in runs)
            backdoor = [r["test_backdoor_accuracy"] for r in runs if "test_backdoor_accuracy" in r]
            cells[name, column] = (acc, statistics.mean(backdoor) if backdoor else None)
        print(f"  {name}: done", file=sys.stderr, flush=True)
    header = "| reducer | " + " | ".join(columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for name in reducers:
        row = []
        for column in columns:
            acc, backdoor = cells[name, column]
            row.append(f"{acc:.3f}" + ("" if backdoor is None else f" (bd {backdoor:.2f})"))
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    clean = cells[reducers[0], "none"][0]
    notes = [f"\nAttack-free accuracy of the plain mean: {clean:.3f}."]
    for column in (c for c in attacks if c in UNTARGETED):
        within = [n for n in reducers if cells[n, column][0] >= clean - 0.05]
        notes.append(f"- {column}: within 5 points of it: {', '.join(within) or 'none'}")
    return "\n".join(lines + notes) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--reducers", default=",".join(REDUCERS))
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "robustness-results.md")
    args = parser.parse_args(argv)
    reducers = args.reducers.split(",")
    attacks = args.attacks.split(",")
    for name in reducers:
        if name not in REDUCERS:
            parser.error(f"--reducers: unknown {name!r}; choose from {', '.join(REDUCERS)}")
    for name in attacks:
        if name not in ATTACKS:
            parser.error(f"--attacks: unknown {name!r}; choose from {', '.join(ATTACKS)}")
    started = time.perf_counter()
    body = table(reducers, attacks, args.rounds, args.seeds)
    command = "python bench/robustness.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (
        "# Robustness table\n\n"
        f"Made by `{command.strip()}` (part of `make bench`) in "
        f"{time.perf_counter() - started:.0f} s. An MLP (64 → 32 → 10) on digits, {CLIENTS} IID "
        f"clients all sampled every round, {int(FRACTION * CLIENTS)} malicious, {args.rounds} "
        f"rounds, mean final test accuracy over {args.seeds} seed(s); `bd` is backdoor "
        "accuracy. Attack defaults: sign_flip −4u, scaling 100u, gaussian σ = 1, alie z from "
        "the paper's formula, ipm ε = 0.5, backdoor boost = cohort size.\n\n" + body
    )
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
