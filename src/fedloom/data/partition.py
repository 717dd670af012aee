"""Partitioners: how a centralized dataset is shared out over clients.

A partitioner is a frozen dataclass, validated when built and printed as the call that built it
(``dirichlet(alpha=0.5, min_size=1)``), so a run can record exactly how its data was split. It is
called as ``partitioner(dataset, clients, rng)`` and returns one sorted ``int64`` index array per
client; the arrays are disjoint. Every partitioner but :func:`natural` covers all examples.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from fedloom.data._checks import check_clients, check_int, check_number
from fedloom.data.federated import Indices, group_indices

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from fedloom.data.dataset import Dataset

MAX_DIRICHLET_ATTEMPTS = 1000
"""How many times :class:`Dirichlet` redraws proportions before giving up on ``min_size``."""


class Partitioner(Protocol):
    """Anything that shares a dataset's examples out over ``clients`` clients."""

    def __call__(self, dataset: Dataset, clients: int, rng: np.random.Generator) -> list[Indices]:
        """One ``int64`` index array into ``dataset.x`` per client; the arrays are disjoint."""
        ...


def _call_repr(constructor: str, config: DataclassInstance) -> str:
    values = ", ".join(f"{f.name}={getattr(config, f.name)!r}" for f in fields(config))
    return f"{constructor}({values})"


def _by_owner(owner: npt.NDArray[np.int64], clients: int) -> list[Indices]:
    """Turn a per-example client id into one sorted index array per client."""
    order = np.argsort(owner, kind="stable").astype(np.int64)
    return list(np.split(order, np.cumsum(np.bincount(owner, minlength=clients))[:-1]))


def _classification_labels(dataset: Dataset, partitioner: str) -> npt.NDArray[np.int64]:
    if dataset.num_classes is None:
        raise ValueError(
            f"{partitioner} splits by label and needs a classification dataset; "
            f"{dataset.name!r} is a regression dataset (num_classes=None): use iid() or "
            "quantity_skew()"
        )
    labels: npt.NDArray[np.int64] = dataset.y
    return labels


@dataclass(frozen=True, repr=False)
class IID:
    """Shuffle, then cut into ``clients`` parts whose sizes differ by at most one."""

    def __repr__(self) -> str:
        return _call_repr("iid", self)

    def __call__(self, dataset: Dataset, clients: int, rng: np.random.Generator) -> list[Indices]:
        check_clients(clients, len(dataset.y))
        return [np.sort(p) for p in np.array_split(rng.permutation(len(dataset.y)), clients)]


@dataclass(frozen=True, repr=False, kw_only=True)
class Dirichlet:
    """Label skew: each class is shared over clients in proportions drawn from Dir(alpha).

    The non-IID model of Hsu, Qi and Brown (2019), "Measuring the Effects of Non-Identical Data
    Distribution for Federated Visual Classification", drawn per class over clients as in the
    reference code of Yurochkin et al. (2019), "Bayesian Nonparametric Federated Learning of Neural
    Networks": small ``alpha`` gives each client few labels, large ``alpha`` approaches IID. The
    draw is repeated (at most ``MAX_DIRICHLET_ATTEMPTS`` times) until every client holds at least
    ``min_size`` examples; ``min_size=0`` accepts the first draw, empty clients included.
    """

    alpha: float
    min_size: int = 1

    def __post_init__(self) -> None:
        check_number("alpha", self.alpha, accepted="a finite number > 0", ok=lambda v: v > 0)
        check_int("min_size", self.min_size, minimum=0)

    def __repr__(self) -> str:
        return _call_repr("dirichlet", self)

    def __call__(self, dataset: Dataset, clients: int, rng: np.random.Generator) -> list[Indices]:
        labels = _classification_labels(dataset, repr(self))
        check_clients(clients, len(labels))
        if self.min_size * clients > len(labels):
            raise ValueError(
                f"{self!r} with clients={clients} needs at least {self.min_size * clients} "
                f"examples but there are {len(labels)}: lower min_size or clients"
            )
        by_class = [members for members in group_indices(labels) if len(members)]
        owner = np.empty(len(labels), dtype=np.int64)
        for _ in range(MAX_DIRICHLET_ATTEMPTS):
            for members in by_class:
                shares = rng.dirichlet(np.full(clients, self.alpha))
                bounds = np.floor(np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
                bounds = np.minimum(bounds, len(members))
                counts = np.diff(np.concatenate([[0], bounds, [len(members)]]))
                owner[rng.permutation(members)] = np.repeat(np.arange(clients), counts)
            if np.bincount(owner, minlength=clients).min() >= self.min_size:
                return _by_owner(owner, clients)
        raise ValueError(
            f"{self!r} left some client with fewer than min_size={self.min_size} examples in "
            f"{MAX_DIRICHLET_ATTEMPTS} draws with clients={clients}: raise alpha (now "
            f"{self.alpha}), lower clients or lower min_size"
        )


@dataclass(frozen=True, repr=False, kw_only=True)
class DirichletMixture:
    """Label skew with every client's own label mixture ~ Dir(alpha · prior) and equal sizes.

    Hsu, Qi and Brown (2019)'s formulation drawn per client: client ``i`` draws proportions
    ``q_i ~ Dir(alpha · p)`` over the classes (``p`` the dataset's class shares), then takes its
    share of the examples (sizes differ by at most one) class by class in those proportions,
    without replacement; when a class runs out, its weight goes to the classes left. Unlike
    :class:`Dirichlet`, which shares each class out over the clients, this gives every client
    data for any client count up to the number of examples (the last clients drawn see the
    classes the others left, so their skew is weaker).
    """

    alpha: float

    def __post_init__(self) -> None:
        check_number("alpha", self.alpha, accepted="a finite number > 0", ok=lambda v: v > 0)

    def __repr__(self) -> str:
        return _call_repr("dirichlet_mixture", self)

    def __call__(self, dataset: Dataset, clients: int, rng: np.random.Generator) -> list[Indices]:
        labels = _classification_labels(dataset, repr(self))
        check_clients(clients, len(labels))
        pools = [rng.permutation(members) for members in group_indices(labels)]
        left = np.array([len(p) for p in pools], dtype=np.int64)
        taken = np.zeros(len(pools), dtype=np.int64)
        prior = left / left.sum()
        sizes = _apportion(len(labels), np.ones(clients))
        parts: list[Indices] = []
        for size in sizes:
            mixture = rng.dirichlet(self.alpha * prior + 1e-12)
            counts = np.zeros(len(pools), dtype=np.int64)
            need = int(size)
            while need > 0:
                weights = np.where(left > counts, mixture, 0.0)
                if weights.sum() <= 0:  # its classes are used up: the classes left, by size
                    weights = (left - counts).astype(np.float64)
                draw = rng.multinomial(need, weights / weights.sum())
                more = np.minimum(draw, left - counts)
                counts += more
                need -= int(more.sum())
            chosen = [p[t : t + c] for p, t, c in zip(pools, taken, counts, strict=True)]
            parts.append(np.sort(np.concatenate(chosen)))
            taken += counts
            left -= counts
        return parts


@dataclass(frozen=True, repr=False, kw_only=True)
class Shards:
    """Pathological non-IID: sort by label, cut ``clients * per_client`` shards, deal them out.

    From McMahan et al. (2017), "Communication-Efficient Learning of Deep Networks from
    Decentralized Data", where each of 100 clients got 2 shards of 300 MNIST digits and so saw
    about two classes. Ties within a label are broken at random; shard sizes differ by at most one.
    """

    per_client: int = 2

    def __post_init__(self) -> None:
        check_int("per_client", self.per_client, minimum=1)

    def __repr__(self) -> str:
        return _call_repr("shards", self)

    def __call__(self, dataset: Dataset, clients: int, rng: np.random.Generator) -> list[Indices]:
        n = len(dataset.y)
        check_clients(clients, n)
        count = clients * self.per_client
        if count > n:
            raise ValueError(
                f"{self!r} with clients={clients} cuts {count} shards but there are only {n} "
                "examples: lower per_client or clients"
            )
        shuffled = rng.permutation(n)
        by_label = shuffled[np.argsort(dataset.y[shuffled], kind="stable")]
        pieces = np.array_split(by_label, count)
        dealt = rng.permutation(count).reshape(clients, self.per_client)
        return [np.sort(np.concatenate([pieces[s] for s in hand])) for hand in dealt]


@dataclass(frozen=True, repr=False, kw_only=True)
class QuantitySkew:
    """Unequal client sizes with IID labels: the k-th largest client's share is ∝ k^-exponent.

    Sizes follow a deterministic Zipf-like power law (``exponent=0`` gives equal sizes), the
    ranks are dealt to clients at random, and every client first gets ``min_size`` examples.
    Power-law client sizes mirror real federated populations, as in LEAF (Caldas et al., 2018,
    "LEAF: A Benchmark for Federated Settings") and the device sizes of Li et al. (2020),
    "Federated Optimization in Heterogeneous Networks".
    """

    exponent: float = 1.5
    min_size: int = 1

    def __post_init__(self) -> None:
        check_number(
            "exponent", self.exponent, accepted="a finite number >= 0", ok=lambda v: v >= 0
        )
        check_int("min_size", self.min_size, minimum=0)

    def __repr__(self) -> str:
        return _call_repr("quantity_skew", self)

    def __call__(self, dataset: Dataset, clients: int, rng: np.random.Generator) -> list[Indices]:
        n = len(dataset.y)
        check_clients(clients, n)
        spare = n - self.min_size * clients
        if spare < 0:
            raise ValueError(
                f"{self!r} with clients={clients} needs at least {self.min_size * clients} "
                f"examples but there are {n}: lower min_size or clients"
            )
        weights = np.arange(1, clients + 1, dtype=np.float64) ** -self.exponent
        sizes = self.min_size + _apportion(spare, weights[rng.permutation(clients)])
        return [np.sort(p) for p in np.split(rng.permutation(n), np.cumsum(sizes)[:-1])]


@dataclass(frozen=True, repr=False)
class Natural:
    """One client per distinct value of ``dataset.groups``, in sorted order of the values."""

    def __repr__(self) -> str:
        return _call_repr("natural", self)

    def __call__(self, dataset: Dataset, clients: int, rng: np.random.Generator) -> list[Indices]:
        if dataset.groups is None:
            raise ValueError(
                f"natural() needs a dataset with groups, and {dataset.name!r} has none: pass "
                "group= to load_csv, groups= to load_npz, or Dataset(groups=...)"
            )
        parts = group_indices(dataset.groups)
        if clients != len(parts):
            raise ValueError(
                f"natural() makes one client per group: {dataset.name!r} has {len(parts)} "
                f"groups but clients={clients}; pass clients={len(parts)}"
            )
        return parts


def _apportion(total: int, weights: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Split ``total`` into integers ∝ ``weights`` summing to ``total`` (largest remainder)."""
    quotas = total * weights / weights.sum()
    sizes = np.floor(quotas).astype(np.int64)
    short = total - int(sizes.sum())
    sizes[np.argsort(sizes - quotas, kind="stable")[:short]] += 1
    result: npt.NDArray[np.int64] = sizes
    return result


def iid() -> IID:
    """Shuffle and split as evenly as possible (sizes differ by at most one)."""
    return IID()


def dirichlet(alpha: float, *, min_size: int = 1) -> Dirichlet:
    """Label skew with per-class client proportions ~ Dir(alpha) (Hsu et al., 2019)."""
    return Dirichlet(alpha=alpha, min_size=min_size)


def dirichlet_mixture(alpha: float) -> DirichletMixture:
    """Label skew with each client's label mixture ~ Dir(alpha · prior), equal client sizes."""
    return DirichletMixture(alpha=alpha)


def shards(*, per_client: int = 2) -> Shards:
    """McMahan et al.'s (2017) pathological non-IID split: ``per_client`` label-sorted shards."""
    return Shards(per_client=per_client)


def quantity_skew(*, exponent: float = 1.5, min_size: int = 1) -> QuantitySkew:
    """Power-law client sizes (share of the k-th largest ∝ k^-exponent) with IID labels."""
    return QuantitySkew(exponent=exponent, min_size=min_size)


def natural() -> Natural:
    """One client per distinct value of the dataset's ``groups``."""
    return Natural()
