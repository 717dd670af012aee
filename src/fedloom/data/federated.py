"""A dataset already split over clients: each client's train/test arrays plus a central test set.

The assembly steps here (the central holdout and the per-client train/test split) are shared by
:meth:`fedloom.data.Dataset.split` and by generators with a built-in partition such as
:func:`fedloom.data.synthetic`, so both produce clients the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedloom.data.report import PartitionReport

Array = npt.NDArray[Any]
Indices = npt.NDArray[np.int64]
"""A 1-D ``int64`` array of example indices."""

_ROUNDING_SLACK = 1e-9


@dataclass(frozen=True, eq=False, repr=False)
class ClientData:
    """One client's local data: a training split and a local test split (may be empty).

    The local test split serves federated evaluation, where each client scores the global model
    on data it did not train on.
    """

    client_id: int
    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array

    def __post_init__(self) -> None:
        for x, y, split in (
            (self.x_train, self.y_train, "train"),
            (self.x_test, self.y_test, "test"),
        ):
            if len(x) != len(y):
                raise ValueError(
                    f"client {self.client_id}: x_{split} has {len(x)} rows but y_{split} has "
                    f"{len(y)}; they must match"
                )

    def __repr__(self) -> str:
        return (
            f"ClientData(client_id={self.client_id}, train={self.num_train}, test={self.num_test})"
        )

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    @property
    def num_test(self) -> int:
        return len(self.y_test)


@dataclass(frozen=True, eq=False, repr=False)
class FederatedData:
    """Clients' data plus the server's central held-out test set (which may be empty)."""

    name: str
    clients: Sequence[ClientData]
    test_x: Array
    test_y: Array
    num_classes: int | None

    def __post_init__(self) -> None:
        if not len(self.clients):
            raise ValueError(f"FederatedData {self.name!r} needs at least one client, got none")
        if self.lazy:
            return  # generated on demand: the generator makes client i with client_id i
        for position, client in enumerate(self.clients):
            if client.client_id != position:
                raise ValueError(
                    f"clients[{position}] has client_id={client.client_id}; client ids must be "
                    f"their positions 0..{len(self.clients) - 1}"
                )
        if len(self.test_x) != len(self.test_y):
            raise ValueError(
                f"test_x has {len(self.test_x)} rows but test_y has {len(self.test_y)}; "
                "they must match"
            )

    def __len__(self) -> int:
        return len(self.clients)

    @property
    def lazy(self) -> bool:
        """Whether clients are generated on demand (see :mod:`fedloom.data.population`)."""
        from fedloom.data.population import LazyClients  # it builds on this module

        return isinstance(self.clients, LazyClients)

    def _materialized(self, what: str) -> Sequence[ClientData]:
        if self.lazy:
            raise ValueError(
                f"{what} would generate all {len(self.clients)} clients of {self.name!r}, which "
                "this dataset makes on demand; generate it with lazy=False for that"
            )
        return self.clients

    def __repr__(self) -> str:
        if self.lazy:
            return (
                f"FederatedData(name={self.name!r}, clients={len(self)} made on demand, "
                f"central_test={len(self.test_y)}, num_classes={self.num_classes})"
            )
        train = sum(c.num_train for c in self.clients)
        return (
            f"FederatedData(name={self.name!r}, clients={len(self)}, train={train}, "
            f"central_test={len(self.test_y)}, num_classes={self.num_classes})"
        )

    def report(self) -> PartitionReport:
        """How skewed the clients' training label distributions are (see PartitionReport)."""
        clients = self._materialized("report()")
        return PartitionReport.from_labels(
            [c.y_train for c in clients], num_classes=self.num_classes
        )

    def pooled(self) -> tuple[Array, Array]:
        """The union of all clients' training data, for a centralized baseline."""
        clients = self._materialized("pooled()")
        return (
            np.concatenate([c.x_train for c in clients]),
            np.concatenate([c.y_train for c in clients]),
        )


def group_indices(values: Array) -> list[Indices]:
    """Indices of the examples holding each distinct value, in sorted order of the values."""
    order = np.argsort(values, kind="stable").astype(np.int64)
    ordered = values[order]
    starts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    return [np.sort(part) for part in np.split(order, starts)] if len(order) else []


def holdout_split(
    strata: Array, fraction: float, rng: np.random.Generator
) -> tuple[Indices, Indices]:
    """Split ``0..n-1`` into (kept, held), holding out ``floor(fraction * size)`` of each stratum.

    Rounding down per stratum means a stratum is never held out entirely, so every class (or
    device) that exists keeps at least one example for the clients. Both results are sorted.
    """
    held = [
        rng.permutation(members)[: math.floor(fraction * len(members) + _ROUNDING_SLACK)]
        for members in group_indices(strata)
    ]
    held_indices = np.sort(np.concatenate([*held, np.empty(0, np.int64)]))
    kept = np.setdiff1d(np.arange(len(strata), dtype=np.int64), held_indices)
    return kept, held_indices


def federate(
    *,
    name: str,
    x: Array,
    y: Array,
    num_classes: int | None,
    parts: Sequence[Indices],
    held: Indices,
    test_fraction: float,
    rng: np.random.Generator,
) -> FederatedData:
    """Build clients from index arrays into ``x``/``y``, each split into train and local test.

    A client with ``m`` examples gets ``floor(test_fraction * m)`` of them, chosen at random, as
    its local test split; with ``test_fraction < 1`` every non-empty client keeps at least one
    training example.
    """
    clients = []
    for client_id, part in enumerate(parts):
        shuffled = rng.permutation(part)
        n_test = math.floor(test_fraction * len(part) + _ROUNDING_SLACK)
        n_test = min(n_test, max(len(part) - 1, 0))
        test, train = shuffled[:n_test], shuffled[n_test:]
        clients.append(ClientData(client_id, x[train], y[train], x[test], y[test]))
    return FederatedData(
        name=name,
        clients=tuple(clients),
        test_x=x[held],
        test_y=y[held],
        num_classes=num_classes,
    )
