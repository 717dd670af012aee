"""What a delta broadcast saves on the downlink, against float32 and a quantized model.

FedAvg trains the MLP of ``bench/codecs.py`` on digits split over 100 clients with Dirichlet(0.5)
label skew, once with every client in every round (cross-silo) and once with 10 of the 100 a
round (cross-device). For each broadcast the table gives the mean bytes sent down per client
per round as the engine records them (a delta broadcast's chains, or the whole float32 model for
a client the server holds nothing recent for), the factor saved against float32, and the final
test accuracy (mean of the last 10 rounds' evaluations). Writes the table to stdout and, with
``--out``, to a file.

    python bench/delta_broadcast.py --out /tmp/delta.md        # about a minute
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

import fedloom as fl
from fedloom.torch import local_sgd, mlp

CLIENTS = 100
LAST = 10
C = fl.compression


@dataclass(frozen=True)
class Broadcast:
    label: str
    apply: Callable[[fl.Algorithm], fl.Algorithm]


def delta(bits: int, window: int) -> Callable[[fl.Algorithm], fl.Algorithm]:
    return lambda a: a.with_broadcast(C.uniform(bits), delta_window=window)


BROADCASTS = [
    Broadcast("float32 (no codec)", lambda a: a),
    Broadcast("uniform 8-bit model (no delta)", lambda a: a.with_broadcast(C.uniform(8))),
    Broadcast("uniform 2-bit model (no delta)", lambda a: a.with_broadcast(C.uniform(2))),
    Broadcast("delta, uniform 8-bit, window 8", delta(8, 8)),
    Broadcast("delta, uniform 4-bit, window 8", delta(4, 8)),
    Broadcast("delta, uniform 2-bit, window 16", delta(2, 16)),
    Broadcast("delta, uniform 1-bit, window 32 (diverges)", delta(1, 32)),
]


@dataclass(frozen=True)
class Row:
    down: float
    accuracy: float
    seconds: float


def train(broadcast: Broadcast, cohort: int, rounds: int) -> Row:
    clients = fl.data.digits().split(fl.data.dirichlet(0.5), clients=CLIENTS, seed=0)
    work = local_sgd(mlp(64, [32], 10), lr=0.2, epochs=2, batch_size=16)
    algorithm = broadcast.apply(fl.fedavg(work))
    started = time.perf_counter()
    history = fl.simulate(algorithm, clients, rounds=rounds, cohort=cohort, seed=0,
                          federated_eval=False, executor="vectorized")  # fmt: skip
    return Row(
        down=float(np.mean(history.metric("bytes_down"))) / cohort,
        accuracy=100 * float(np.mean(history.metric("test_accuracy")[-LAST:])),
        seconds=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    command = shlex.join(["python", "bench/delta_broadcast.py", *sys.argv[1:]])
    lines = [
        f"Made by `{command}`: FedAvg, MLP 64-32-10 (2,410 parameters, 9,640 bytes as float32), "
        f"digits over {CLIENTS} clients (Dirichlet 0.5), {args.rounds} rounds, one seed.",
        "",
    ]
    for cohort, name in ((CLIENTS, "every client every round"), (10, "10 of 100 a round")):
        lines += [
            f"**{name}**",
            "",
            "| broadcast | bytes down / client / round | x fewer | accuracy % | Δ |",
            "|---|---:|---:|---:|---:|",
        ]
        base: Row | None = None
        for broadcast in BROADCASTS:
            row = train(broadcast, cohort, args.rounds)
            base = base or row
            print(f"cohort {cohort:3} {broadcast.label:44} down {row.down:8,.0f} B  "
                  f"acc {row.accuracy:5.1f}%  ({row.seconds:.0f} s)", flush=True)  # fmt: skip
            lines.append(
                f"| {broadcast.label} | {row.down:,.0f} | {base.down / row.down:.1f} | "
                f"{row.accuracy:.1f} | {row.accuracy - base.accuracy:+.1f} |"
            )
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
