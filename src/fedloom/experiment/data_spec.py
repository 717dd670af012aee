"""The ``[data]`` table: which dataset, how many clients, and how it is partitioned.

Each dataset's own keys (``num_samples`` for MNIST-1D, ``path`` and ``target`` for a CSV…) are
the keyword arguments of its loader in :mod:`fedloom.data`, checked against that loader's
signature; so are each partitioner's (``alpha`` and ``min_size`` for ``dirichlet``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from fedloom import data as fd
from fedloom.experiment import checks
from fedloom.experiment.checks import Options, OptionValue
from fedloom.experiment.errors import ExperimentError, KeyPath

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class DatasetKind:
    """A dataset a run file can name: its loader, the arguments fedloom passes to the loader
    itself, and its number of classes when known without loading it."""

    loader: Callable[..., Any]
    provided: tuple[str, ...] = ()
    classes: int | None = None


DATASETS: dict[str, DatasetKind] = {
    "digits": DatasetKind(fd.digits, classes=10),
    "breast_cancer": DatasetKind(fd.breast_cancer, classes=2),
    "mnist1d": DatasetKind(fd.mnist1d, ("seed",), classes=10),
    "synthetic": DatasetKind(fd.synthetic, ("clients", "seed", "test_fraction", "holdout")),
    "csv": DatasetKind(fd.load_csv),
    "npz": DatasetKind(fd.load_npz),
}
"""Datasets by the name ``data.dataset`` takes."""

PARTITIONS: dict[str, Callable[..., fd.Partitioner]] = {
    "iid": fd.iid,
    "dirichlet": fd.dirichlet,
    "dirichlet_mixture": fd.dirichlet_mixture,
    "shards": fd.shards,
    "quantity_skew": fd.quantity_skew,
    "natural": fd.natural,
}
"""Partitioners by the name ``data.partition.kind`` takes."""

GROUP_OPTION = {"csv": "group", "npz": "groups"}
"""The option that gives a file's examples their natural groups (for ``natural``)."""


@dataclass(frozen=True)
class PartitionSpec:
    """``[data.partition]``: a partitioner of :mod:`fedloom.data` and its keyword options."""

    kind: str
    options: Options = field(default_factory=dict)

    SECTION: ClassVar[KeyPath] = ("data", "partition")

    def __post_init__(self) -> None:
        checks.choice((*self.SECTION, "kind"), self.kind, PARTITIONS)
        options = checks.options(
            self.SECTION, self.options, PARTITIONS[self.kind], table_keys=("kind",)
        )
        object.__setattr__(self, "options", options)
        self.partitioner()

    def partitioner(self) -> fd.Partitioner:
        """The partitioner this table describes."""
        try:
            return PARTITIONS[self.kind](**self.options)
        except ValueError as error:
            raise checks.blamed(self.SECTION, self.options, error) from None


@dataclass(frozen=True)
class DataSpec:
    """``[data]``: a dataset split over ``clients`` clients.

    ``test_fraction`` is each client's local test split and ``holdout`` the server's central
    test set (see :meth:`fedloom.data.Dataset.split`). ``partition`` defaults to IID; the
    ``synthetic`` dataset makes one client per generated device, so it takes no partition (or
    ``natural``). ``seed`` draws the data (generation and split); by default, ``run.seed``.
    ``options`` are the dataset's own keys; a ``path`` is used as written, so a relative one is
    relative to the working directory (:func:`load_experiment` resolves paths against the file).
    """

    dataset: str
    clients: int
    test_fraction: float = 0.2
    holdout: float = 0.2
    partition: PartitionSpec | None = None
    seed: int | None = None
    options: Options = field(default_factory=dict)

    SECTION: ClassVar[KeyPath] = ("data",)
    KEYS: ClassVar[tuple[str, ...]] = (
        "dataset",
        "clients",
        "test_fraction",
        "holdout",
        "partition",
        "seed",
    )

    def __post_init__(self) -> None:
        at = self.SECTION
        checks.choice((*at, "dataset"), self.dataset, DATASETS)
        checks.integer((*at, "clients"), self.clients, minimum=1)
        for name in ("test_fraction", "holdout"):
            share = checks.number((*at, name), getattr(self, name), low=0, high=1, high_open=True)
            object.__setattr__(self, name, share)
        if self.seed is not None:
            checks.integer((*at, "seed"), self.seed, minimum=0)
        if self.partition is not None and not isinstance(self.partition, PartitionSpec):
            raise ExperimentError(
                (*at, "partition"),
                f"must be a PartitionSpec (a [data.partition] table), got {self.partition!r}",
            )
        kind = DATASETS[self.dataset]
        options = checks.options(
            at,
            self.options,
            kind.loader,
            provided=(*kind.provided, *self.KEYS),
            table_keys=self.KEYS,
        )
        object.__setattr__(self, "options", options)
        _check_generator_options(self.dataset, options)
        self._check_partition()

    @property
    def task(self) -> Task:
        """Classification, or regression (a CSV or NPZ file with ``classification = false``)."""
        return "regression" if self.options.get("classification") is False else "classification"

    @property
    def num_classes(self) -> int | None:
        """The number of classes, where known without loading the data."""
        if self.dataset == "synthetic":
            classes = self.options.get("classes", 10)
            return classes if isinstance(classes, int) else None
        return DATASETS[self.dataset].classes

    @property
    def has_groups(self) -> bool:
        """Whether each example comes with a natural group, as ``natural`` needs."""
        return self.dataset in GROUP_OPTION and GROUP_OPTION[self.dataset] in self.options

    def _check_partition(self) -> None:
        kind = None if self.partition is None else self.partition.kind
        at: KeyPath = (*self.SECTION, "partition", "kind")
        if self.dataset == "synthetic" and kind not in (None, "natural"):
            raise ExperimentError(
                at,
                f"the synthetic dataset makes one client per generated device, so it takes no "
                f'partition (or "natural"), got {checks.show(kind)}',
            )
        if kind == "natural" and self.dataset != "synthetic" and not self.has_groups:
            hint = (
                f"set data.{GROUP_OPTION[self.dataset]} to the column of groups"
                if self.dataset in GROUP_OPTION
                else f"the {self.dataset} dataset has none; use csv or npz with groups"
            )
            raise ExperimentError(at, f'"natural" needs examples with groups: {hint}')
        if kind in ("dirichlet", "dirichlet_mixture") and self.task == "regression":
            raise ExperimentError(
                at,
                f'"{kind}" splits by label and needs a classification dataset; this one is '
                'regression (classification = false): use "iid" or "quantity_skew"',
            )


def _check_generator_options(dataset: str, options: Mapping[str, OptionValue]) -> None:
    """Value checks for generated datasets' options, which the loaders only make when run."""
    at: KeyPath = ("data",)
    if dataset == "mnist1d" and "num_samples" in options:
        count = checks.integer((*at, "num_samples"), options["num_samples"], minimum=10)
        if count % 10:
            raise ExperimentError(
                (*at, "num_samples"),
                f"must be a multiple of 10 (one equal share per class), got {count}",
            )
    if dataset == "synthetic":
        for name in ("alpha", "beta"):
            checks.number((*at, name), options[name], low=0)
        for name, minimum in (("dim", 1), ("classes", 2)):
            if name in options:
                checks.integer((*at, name), options[name], minimum=minimum)
