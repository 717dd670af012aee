"""The benchmark's workloads, the shared data file every system trains on, and result files.

This module needs only NumPy and the standard library: the Flower runner imports it inside
Flower's own virtual environment, where fedloom is not installed.

The data file (``.npz``) is written once per workload by :func:`write_partition` from a
``fedloom.data.FederatedData`` and read by every system, so fedloom, Flower and the plain loop
train on identical clients and score on the identical central test set. It holds

- ``x``, ``y``: every client's training examples, client after client;
- ``offsets``: ``clients + 1`` positions, client ``k`` owning rows ``offsets[k]:offsets[k+1]``;
- ``test_x``, ``test_y``: the server's central test set;
- ``cohorts``: ``[rounds, cohort]`` client indices, row ``r`` the clients that train in round
  ``r`` (drawn once from the workload's seed, so every system trains the same clients each
  round);
- ``initial``: the initial global model as one flat float32 vector, in PyTorch's parameter
  order (``torch.nn.utils.parameters_to_vector``), which every system starts from.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Workload:
    """One benchmark workload: the data, the model and the federated schedule.

    ``dataset`` is ``"digits"`` (an MLP on a partition that every system shares) or
    ``"synthetic"`` (FedProx's Synthetic(1, 1) with softmax regression, fedloom only, as the
    generator itself is fedloom's). ``alpha`` is the Dirichlet concentration of the label skew;
    ``partition`` is ``"dirichlet"`` (each class shared over the clients in Dir(alpha)
    proportions) or ``"dirichlet_mixture"`` (each client's own label mix ~ Dir(alpha · prior),
    equal sizes), fedloom's partitioners of those names.
    """

    name: str
    dataset: str
    clients: int
    cohort: int
    rounds: int
    epochs: int
    batch_size: int
    lr: float
    hidden: tuple[int, ...] = (64,)
    alpha: float = 0.5
    partition: str = "dirichlet"
    seed: int = 0

    @property
    def title(self) -> str:
        if self.dataset == "synthetic":
            return (
                f"FedProx Synthetic(1, 1), softmax regression, {self.clients:,} devices, "
                f"{self.cohort:,} per round"
            )
        model = "-".join(str(width) for width in (64, *self.hidden, 10))
        return f"digits, MLP {model}, {self.clients:,} clients, {self.cohort:,} per round"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> Workload:
        return Workload.from_dict(json.loads(text))

    @staticmethod
    def from_dict(fields: dict[str, Any]) -> Workload:
        return Workload(**{**fields, "hidden": tuple(fields["hidden"])})


W1 = Workload(
    name="W1",
    dataset="digits",
    clients=100,
    cohort=100,
    rounds=20,
    epochs=2,
    batch_size=32,
    lr=0.2,
)
# Per-class Dirichlet shares cannot give 1,000 clients an example each of digits' 1,438 training
# examples (most clients draw none of most classes); per-client label mixtures can.
W2 = replace(
    W1,
    name="W2",
    clients=1000,
    cohort=100,
    partition="dirichlet_mixture",
)
# FedProx's setting (Li et al. 2020, "Federated Optimization in Heterogeneous Networks"):
# lr 0.01, batch 10; one local epoch instead of their 20 keeps a round short.
W3 = Workload(
    name="W3",
    dataset="synthetic",
    clients=100_000,
    cohort=1000,
    rounds=5,
    epochs=1,
    batch_size=10,
    lr=0.01,
    hidden=(),
)
WORKLOADS = {w.name: w for w in (W1, W2, W3)}


def quick(workload: Workload) -> Workload:
    """A seconds-long version of ``workload`` for smoke tests: few clients, rounds and epochs."""
    clients = min(workload.clients, 20 if workload.dataset == "digits" else 200)
    return replace(
        workload,
        clients=clients,
        cohort=min(workload.cohort, clients // 2),
        rounds=3,
        epochs=1,
    )


@dataclass(frozen=True)
class Partition:
    """Clients' training arrays and the central test set, as read from a data file."""

    xs: list[Array]
    ys: list[Array]
    test_x: Array
    test_y: Array
    cohorts: Array
    """``[rounds, cohort]`` client indices: round ``r`` trains ``cohorts[r]``."""
    initial: Array
    """The initial global model, a flat float32 vector in PyTorch's parameter order."""

    @property
    def num_classes(self) -> int:
        return int(max(int(y.max()) for y in (*self.ys, self.test_y) if len(y)) + 1)


def cohort_schedule(workload: Workload) -> Array:
    """``[rounds, cohort]``: each round's clients, uniformly without replacement, sorted, from
    the workload's seed (the draw every system replays)."""
    rng = np.random.default_rng([workload.seed, 1])
    return np.stack(
        [
            np.sort(rng.choice(workload.clients, size=workload.cohort, replace=False))
            for _ in range(workload.rounds)
        ]
    ).astype(np.int64)


def write_partition(
    path: Path,
    xs: Sequence[Array],
    ys: Sequence[Array],
    test_x: Array,
    test_y: Array,
    *,
    cohorts: Array,
    initial: Array,
) -> None:
    """Write clients' training arrays, the central test set, each round's cohort and the
    initial model to ``path`` (see module doc)."""
    sizes = [len(y) for y in ys]
    cohorts = np.asarray(cohorts, dtype=np.int64)
    if cohorts.ndim != 2 or (cohorts.size and (cohorts.min() < 0 or cohorts.max() >= len(ys))):
        raise ValueError(f"cohorts must be [rounds, cohort] indices below {len(ys)}")
    np.savez(
        path,
        x=np.concatenate(xs).astype(np.float32),
        y=np.concatenate(ys).astype(np.int64),
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        test_x=np.asarray(test_x, dtype=np.float32),
        test_y=np.asarray(test_y, dtype=np.int64),
        cohorts=cohorts,
        initial=np.asarray(initial, dtype=np.float32),
    )


def read_partition(path: Path | str) -> Partition:
    """Read a data file written by :func:`write_partition`."""
    with np.load(path, allow_pickle=False) as archive:
        x, y, offsets = archive["x"], archive["y"], archive["offsets"]
        bounds = list(pairwise(offsets.tolist()))
        return Partition(
            xs=[x[lo:hi] for lo, hi in bounds],
            ys=[y[lo:hi] for lo, hi in bounds],
            test_x=archive["test_x"],
            test_y=archive["test_y"],
            cohorts=archive["cohorts"],
            initial=archive["initial"],
        )


@dataclass
class Timeline:
    """Wall-clock times a runner records: training start and the end of every round.

    A round ends after the new global model has been scored on the central test set, so a
    round's time is training, aggregation and that evaluation, the same for every system.
    """

    started: float = 0.0
    round_ends: list[float] | None = None

    def start(self) -> None:
        self.started = time.time()
        self.round_ends = []

    def end_round(self) -> None:
        assert self.round_ends is not None, "call start() first"
        self.round_ends.append(time.time())


def write_result(
    path: Path | str, timeline: Timeline, accuracy: float, **extra: float | int | str
) -> None:
    """Write a runner's outcome as JSON for the driver: round times, final accuracy, extras."""
    ends = timeline.round_ends or []
    result = {
        "train_started": timeline.started,
        "round_ends": ends,
        "round_seconds": list(np.diff([timeline.started, *ends]).tolist()),
        "accuracy": float(accuracy),
        **extra,
    }
    Path(path).write_text(json.dumps(result))


def runner_arguments(description: str, *extra: str) -> argparse.Namespace:
    """The command line every system runner takes: workload, data file, result file (+ extras)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workload", required=True, help="a Workload as JSON")
    parser.add_argument("--data", default="", help="the shared .npz (digits workloads)")
    parser.add_argument("--result", required=True, help="where to write the result JSON")
    for name in extra:
        parser.add_argument(f"--{name}", required=True)
    return parser.parse_args()
