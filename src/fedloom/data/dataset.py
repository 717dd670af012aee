"""A centralized dataset, and how it is split into a federated one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fedloom.data._checks import check_fraction, check_int
from fedloom.data.federated import (
    FederatedData,
    Indices,
    federate,
    group_indices,
    holdout_split,
)

if TYPE_CHECKING:
    from fedloom.data.partition import Partitioner


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A centralized dataset before it is split over clients.

    ``x`` is coerced to ``float32`` with shape ``[n, ...]``. For classification
    (``num_classes`` an int) ``y`` holds ``int64`` labels in ``0..num_classes-1``; for regression
    (``num_classes=None``) ``y`` holds ``float32`` targets. ``groups``, if given, names a natural
    group per example (a user, a hospital, a device) for :func:`fedloom.data.natural`.
    """

    name: str
    x: npt.NDArray[Any]
    y: npt.NDArray[Any]
    num_classes: int | None
    groups: npt.NDArray[Any] | None = None

    def __post_init__(self) -> None:
        x = np.asarray(self.x)
        if x.ndim < 1 or x.dtype.kind not in "biuf":
            raise ValueError(
                f"Dataset {self.name!r}: x must be a numeric array of shape [n, ...], "
                f"got dtype {x.dtype} and shape {x.shape}"
            )
        y = np.asarray(self.y)
        if y.shape != (len(x),):
            raise ValueError(
                f"Dataset {self.name!r}: y must have shape ({len(x)},) to match x {x.shape}, "
                f"got {y.shape}"
            )
        object.__setattr__(self, "x", x.astype(np.float32, copy=False))
        object.__setattr__(self, "y", _coerce_targets(self.name, y, self.num_classes))
        if self.groups is not None:
            groups = np.asarray(self.groups)
            if groups.shape != (len(x),):
                raise ValueError(
                    f"Dataset {self.name!r}: groups must have shape ({len(x)},) to match x, "
                    f"got {groups.shape}"
                )
            object.__setattr__(self, "groups", groups)

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        groups = "None" if self.groups is None else f"<{len(np.unique(self.groups))} groups>"
        return (
            f"Dataset(name={self.name!r}, x=<{self.x.shape} {self.x.dtype}>, "
            f"num_classes={self.num_classes}, groups={groups})"
        )

    def subset(self, indices: Indices) -> Dataset:
        """The examples at ``indices``, in that order, as a new dataset with the same name."""
        groups = None if self.groups is None else self.groups[indices]
        return Dataset(self.name, self.x[indices], self.y[indices], self.num_classes, groups)

    def split(
        self,
        partitioner: Partitioner,
        *,
        clients: int,
        seed: int,
        test_fraction: float = 0.2,
        holdout: float = 0.2,
    ) -> FederatedData:
        """Hold out a central test set, partition the rest over clients, split each client.

        1. ``holdout``: a share of the whole dataset is kept aside as the server's central test
           set, stratified by label for classification (``floor(holdout * n_c)`` examples of each
           class ``c``, so no class disappears); it never removes a whole group.
        2. The rest goes to ``partitioner`` (for example :func:`fedloom.data.dirichlet`).
        3. Each client's share is split into train and a local test split holding
           ``floor(test_fraction * m)`` of its ``m`` examples (``test_fraction`` may be 0).

        Deterministic in ``seed``: the three steps draw from independent streams spawned from
        it, so for a given seed the central test set is the same whatever the partitioner.
        """
        clients = check_int("clients", clients, minimum=1)
        seed = check_int("seed", seed, minimum=0)
        test_fraction = check_fraction("test_fraction", test_fraction)
        holdout = check_fraction("holdout", holdout)
        if not callable(partitioner):
            raise ValueError(
                f"partitioner must be a Partitioner such as iid() or dirichlet(alpha=0.5), "
                f"got {partitioner!r}"
            )
        holdout_rng, partition_rng, local_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
        )
        strata = self.y if self.num_classes is not None else np.zeros(len(self), np.int64)
        kept, held = holdout_split(strata, holdout, holdout_rng)
        if self.groups is not None:
            kept, held = _return_whole_groups(self.groups, kept, held)
        if clients > len(kept):
            raise ValueError(
                f"clients={clients} is more than the {len(kept)} examples left after the central "
                f"holdout (holdout={holdout} of {len(self)} examples); use at most {len(kept)} "
                "clients or a smaller holdout"
            )
        parts = _checked_parts(
            partitioner(self.subset(kept), clients, partition_rng), clients, kept
        )
        for client_id, part in enumerate(parts):
            if len(part) == 0:
                raise ValueError(
                    f"client {client_id} gets no training examples from {partitioner!r} with "
                    f"clients={clients}; use fewer clients or a less skewed partition (for "
                    "dirichlet, a larger alpha or min_size >= 1)"
                )
        return federate(
            name=self.name,
            x=self.x,
            y=self.y,
            num_classes=self.num_classes,
            parts=[kept[part] for part in parts],
            held=held,
            test_fraction=test_fraction,
            rng=local_rng,
        )


def _coerce_targets(name: str, y: npt.NDArray[Any], num_classes: int | None) -> npt.NDArray[Any]:
    if num_classes is None:
        if y.dtype.kind not in "biuf":
            raise ValueError(f"Dataset {name!r}: regression targets must be numeric, got {y.dtype}")
        return y.astype(np.float32, copy=False)
    classes = check_int("num_classes", num_classes, minimum=1)
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0)):
        raise ValueError(
            f"Dataset {name!r}: classification labels must be integers in 0..{classes - 1}, "
            f"got dtype {y.dtype}"
        )
    labels = y.astype(np.int64)
    outside = labels[(labels < 0) | (labels >= classes)]
    if len(outside):
        raise ValueError(
            f"Dataset {name!r}: labels must lie in 0..{classes - 1} (num_classes={classes}), "
            f"found {sorted(set(outside.tolist()))[:5]}"
        )
    return labels


def _return_whole_groups(
    groups: npt.NDArray[Any], kept: Indices, held: Indices
) -> tuple[Indices, Indices]:
    """Give back one held-out example of every group the holdout would otherwise remove."""
    kept_groups = set(np.unique(groups[kept]).tolist())
    returned = [
        int(members[0])
        for members in group_indices(groups[held])
        if groups[held][members[0]].item() not in kept_groups
    ]
    if not returned:
        return kept, held
    back = held[returned]
    return np.union1d(kept, back), np.setdiff1d(held, back)


def _checked_parts(parts: object, clients: int, kept: Indices) -> list[Indices]:
    """Check a partitioner's output: ``clients`` disjoint int index arrays within range."""
    if not isinstance(parts, list | tuple) or len(parts) != clients:
        length = len(parts) if isinstance(parts, list | tuple) else "?"
        raise ValueError(
            f"a partitioner must return a list of {clients} index arrays (one per client), "
            f"got {type(parts).__name__} of length {length}"
        )
    arrays = [np.asarray(p) for p in parts]
    for k, part in enumerate(arrays):
        if part.ndim != 1 or (part.size and part.dtype.kind not in "iu"):
            raise ValueError(f"partition of client {k} must be a 1-D integer array, got {part!r}")
    flat = np.concatenate([*arrays, np.empty(0, np.int64)]).astype(np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= len(kept)):
        raise ValueError(f"partition indices must lie in 0..{len(kept) - 1}")
    if len(np.unique(flat)) != len(flat):
        raise ValueError("partition index arrays must be disjoint; some example went to 2 clients")
    return [a.astype(np.int64) for a in arrays]
