"""Byzantine-robust reducers: aggregates that a minority of arbitrary updates cannot hijack.

Each is a :class:`fedloom.reducers.Reducer` (non-linear, so it is refused behind a stage that
needs a sum, such as secure aggregation) and takes ``attackers``, the number ``f`` of Byzantine
updates it must tolerate; it refuses a cohort too small for that ``f`` with
:class:`CohortTooSmall`. ``min_cohort`` says the smallest cohort each accepts.

>>> import fedloom as fl                                   # doctest: +SKIP
>>> algorithm = fl.fedavg(work).with_reducer(fl.robust.krum(attackers=2))

See docs/robustness.md for what each defends against and what it does not.
"""

from __future__ import annotations

from collections.abc import Callable

from fedloom.reducers import Reducer, mean, weighted_mean
from fedloom.robust.clipping import (
    CenteredClipping,
    NormBoundedMean,
    centered_clipping,
    norm_bounded_mean,
)
from fedloom.robust.coordinate import CoordinateMedian, TrimmedMean, median, trimmed_mean
from fedloom.robust.geometric import GeometricMedian, geometric_median
from fedloom.robust.krum import Bulyan, Krum, bulyan, krum, multi_krum
from fedloom.robust.preconditions import CohortTooSmall

REDUCERS: dict[str, Callable[..., Reducer]] = {
    "weighted_mean": weighted_mean,
    "mean": mean,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multi_krum": multi_krum,
    "bulyan": bulyan,
    "geometric_median": geometric_median,
    "centered_clipping": centered_clipping,
    "norm_bounded_mean": norm_bounded_mean,
}
"""Every reducer by the name a run file's ``[algorithm] reducer`` takes."""


def reducer(name: str, **options: object) -> Reducer:
    """Build a reducer by name: ``reducer("krum", attackers=2)``."""
    if name not in REDUCERS:
        raise ValueError(f"reducer must be one of {sorted(REDUCERS)}, got {name!r}")
    return REDUCERS[name](**options)


__all__ = [
    "REDUCERS",
    "Bulyan",
    "CenteredClipping",
    "CohortTooSmall",
    "CoordinateMedian",
    "GeometricMedian",
    "Krum",
    "NormBoundedMean",
    "TrimmedMean",
    "bulyan",
    "centered_clipping",
    "geometric_median",
    "krum",
    "median",
    "multi_krum",
    "norm_bounded_mean",
    "reducer",
    "trimmed_mean",
]
