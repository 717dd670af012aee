"""``make bench`` (compression): what each update codec costs in bytes and accuracy, and how fast
it runs.

For each codec, FedAvg trains a small MLP on digits and on MNIST-1D split over 100 clients with
Dirichlet(0.5) label skew (20 clients a round, vectorized executor, one thread), and the table
reports the uplink bytes per round (the payloads' sizes, as the engine records them), the factor
saved against float32, and the final test accuracy (mean of the last 10 rounds' evaluations, to
damp round-to-round noise). Then each codec encodes and decodes a 10-million-entry float32 vector
on one core; throughput is the float32 input's 40 MB divided by encode + decode time (best of 5).
Writes ``docs/benchmarks-compression.md`` with the command that made it.

    python bench/codecs.py                      # about 4 minutes
    python bench/codecs.py --rounds 20 --size 1000000 --out /tmp/codecs.md   # a quick look
"""

from __future__ import annotations

import argparse
import os
import platform
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
from fedloom.compression import Compress
from fedloom.torch import local_sgd, mlp

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 100
COHORT = 20
ALPHA = 0.5
LAST = 10
TARGET_RATIO = 16.0
TARGET_LOSS = 1.0
TARGET_SPEED = 200.0


@dataclass(frozen=True)
class Setting:
    """One row: the uplink stage (None: float32) and the broadcast codec (None: float32)."""

    label: str
    stage: Callable[[], Compress] | None
    broadcast: Callable[[], Compress] | None = None


C = fl.compression
SETTINGS = [
    Setting("float32 (no codec)", None),
    Setting("float16", C.float16),
    Setting("bfloat16", C.bfloat16),
    Setting("uniform 8-bit", lambda: C.uniform(8)),
    Setting("uniform 4-bit", lambda: C.uniform(4)),
    Setting("uniform 2-bit, rotated", lambda: C.uniform(2, rotate=True)),
    Setting("QSGD s=4", lambda: C.qsgd(levels=4)),
    Setting("QSGD s=1", lambda: C.qsgd(levels=1)),
    Setting("QSGD s=1, rotated", lambda: C.qsgd(levels=1, rotate=True)),
    Setting(
        "QSGD s=1, rotated, EF (diverges)",
        lambda: C.qsgd(levels=1, rotate=True, error_feedback=True),
    ),
    Setting("TernGrad (QSGD s=1, max norm)", lambda: C.qsgd(levels=1, norm="max")),
    Setting("TernGrad, buckets of 128", lambda: C.qsgd(levels=1, norm="max", bucket=128)),
    Setting("scaled sign (1 bit), EF", C.sign),
    Setting("top-k 5%, EF", lambda: C.top_k(fraction=0.05)),
    Setting("top-k 5%, float16 values, EF", lambda: C.top_k(fraction=0.05, values="float16")),
    Setting("top-k 1%, EF", lambda: C.top_k(fraction=0.01)),
    Setting("random-k 25%, unbiased", lambda: C.random_k(fraction=0.25)),
    Setting(
        "TernGrad + 8-bit broadcast",
        lambda: C.qsgd(levels=1, norm="max"),
        lambda: C.uniform(8),
    ),
]


@dataclass(frozen=True)
class Dataset:
    name: str
    load: Callable[[], fl.data.Dataset]
    hidden: tuple[int, ...]
    lr: float


DATASETS = [
    Dataset("digits", fl.data.digits, (32,), 0.2),
    Dataset("MNIST-1D", fl.data.mnist1d, (128,), 0.5),
]


@dataclass(frozen=True)
class Training:
    up: float
    down: float
    accuracy: float
    seconds: float


def train(dataset: Dataset, setting: Setting, rounds: int) -> Training:
    clients = dataset.load().split(fl.data.dirichlet(ALPHA), clients=CLIENTS, seed=0)
    features = clients.clients[0].x_train.shape[1]
    work = local_sgd(mlp(features, list(dataset.hidden), 10), lr=dataset.lr, epochs=2,
                     batch_size=16)  # fmt: skip
    algorithm = fl.fedavg(work)
    if setting.stage is not None:
        algorithm = algorithm.with_stages(setting.stage())
    if setting.broadcast is not None:
        algorithm = algorithm.with_broadcast(setting.broadcast())
    started = time.perf_counter()
    history = fl.simulate(algorithm, clients, rounds=rounds, cohort=COHORT, seed=0,
                          federated_eval=False, executor="vectorized")  # fmt: skip
    accuracy = history.metric("test_accuracy")
    return Training(
        up=float(np.mean(history.metric("bytes_up"))) / COHORT,
        down=float(np.mean(history.metric("bytes_down"))) / COHORT,
        accuracy=100 * float(np.mean(accuracy[-LAST:])),
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class Speed:
    bits: float
    encode: float
    decode: float
    both: float


def speed(stage: Compress, size: int, repeats: int = 5) -> Speed:
    """MB/s of float32 input (4·size bytes) through encode, decode and both, best of ``repeats``."""
    x = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    rng = np.random.default_rng(1)
    best_encode = best_decode = best_both = float("inf")
    payload = b""
    for _ in range(repeats):
        t0 = time.perf_counter()
        payload = stage.codec.encode(x, rng)
        t1 = time.perf_counter()
        stage.codec.decode(payload, size)
        t2 = time.perf_counter()
        best_encode, best_decode = min(best_encode, t1 - t0), min(best_decode, t2 - t1)
        best_both = min(best_both, t2 - t0)
    megabytes = 4 * size / 1e6
    return Speed(8 * len(payload) / size, megabytes / best_encode, megabytes / best_decode,
                 megabytes / best_both)  # fmt: skip


def markdown(
    results: dict[str, dict[str, Training]],
    speeds: dict[str, Speed],
    *,
    rounds: int,
    size: int,
    command: str,
    seconds: float,
) -> str:
    lines = [
        "# Compression benchmark",
        "",
        f"Made by `{command}` in {seconds / 60:.1f} minutes on {machine()}.",
        "",
        f"FedAvg, {CLIENTS} clients with Dirichlet({ALPHA}) label skew, {COHORT} a round, "
        f"{rounds} rounds, 2 local epochs of SGD (batch 16), vectorized executor, one thread; "
        "digits: MLP 64-32-10 (2,410 parameters), lr 0.2; MNIST-1D: MLP 40-128-10 (6,538 "
        "parameters), lr 0.5. *Bytes up* is the mean uplink payload per client per round as the "
        "engine records it (the codec's payload, envelope and checksum included); *x fewer* "
        "compares it with float32; *accuracy* is the server's test accuracy averaged over the "
        f"last {LAST} rounds (one seed), *Δ* its difference from float32 in points. EF is "
        "error feedback; on an unbiased 1.6-bit quantizer it diverges (its residual piles up the "
        "quantizer's variance; clients whose update overflows fail and send nothing), which is "
        "why it is off by default there. Bytes down are per client per round; only the last "
        "row compresses the broadcast.",
        "",
    ]
    verdicts = []
    for dataset, rows in results.items():
        base = rows[SETTINGS[0].label]
        lines += [
            f"## {dataset}",
            "",
            "| codec | bytes up / client / round | x fewer | bytes down / client "
            "| accuracy % | Δ |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label, row in rows.items():
            ratio = base.up / row.up
            delta = row.accuracy - base.accuracy
            lines.append(
                f"| {label} | {row.up:,.0f} | {ratio:.1f} | {row.down:,.0f} | "
                f"{row.accuracy:.1f} | {delta:+.1f} |"
            )
            if ratio >= TARGET_RATIO and delta >= -TARGET_LOSS:
                verdicts.append(f"{label} on {dataset} ({ratio:.1f}x, {delta:+.1f} points)")
        lines.append("")
    lines += [
        f"## Encode + decode throughput, {size:,} entries, one core",
        "",
        "MB/s of float32 input (4 bytes an entry); best of 5.",
        "",
        "| codec | bits / entry | encode MB/s | decode MB/s | encode + decode MB/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, s in speeds.items():
        lines.append(
            f"| {label} | {s.bits:.2f} | {s.encode:,.0f} | {s.decode:,.0f} | {s.both:,.0f} |"
        )
    fast = [label for label, s in speeds.items() if s.both >= TARGET_SPEED]
    slow = [label for label, s in speeds.items() if s.both < TARGET_SPEED]
    lines += [
        "",
        "## Targets",
        "",
        f"- At least {TARGET_RATIO:.0f}x fewer uplink bytes than float32 at no more than "
        f"{TARGET_LOSS:.0f} point lower accuracy: "
        + ("met by " + "; ".join(verdicts) if verdicts else "**not met** by any codec")
        + ".",
        f"- At least {TARGET_SPEED:.0f} MB/s per core (encode + decode): met by "
        + (", ".join(fast) or "none")
        + (f"; below it: {', '.join(slow)}" if slow else "")
        + ".",
        "",
    ]
    return "\n".join(lines)


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.processor() or platform.machine()} with {os.cpu_count()} CPUs (load average "
        f"{load} when it finished: other work shares them, which lowers the MB/s), "
        f"Python {platform.python_version()}, NumPy {np.__version__}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-compression.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    results: dict[str, dict[str, Training]] = {}
    for dataset in DATASETS:
        results[dataset.name] = {}
        for setting in SETTINGS:
            row = train(dataset, setting, args.rounds)
            results[dataset.name][setting.label] = row
            print(f"{dataset.name:9} {setting.label:38} up {row.up:9,.0f} B  "
                  f"acc {row.accuracy:5.1f}%  ({row.seconds:.0f} s)", flush=True)  # fmt: skip
    speeds = {}
    for setting in SETTINGS[1:-1]:
        assert setting.stage is not None
        speeds[setting.label] = speed(setting.stage(), args.size)
        s = speeds[setting.label]
        print(f"{setting.label:38} {s.both:7,.0f} MB/s encode+decode", flush=True)
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python bench/codecs.py", *(shlex.quote(a) for a in given)])
    text = markdown(results, speeds, rounds=args.rounds, size=args.size, command=command,
                    seconds=time.perf_counter() - started)  # fmt: skip
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
