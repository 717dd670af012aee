"""How skewed a partition is: per-client label histograms and their distance to the global one.

The skew statistic is the mean, over clients, of the total-variation distance

    TV(p_k, p) = 1/2 * sum_c |p_k(c) - p(c)|

between client k's training label distribution ``p_k`` and the pooled training label
distribution ``p`` of all clients. It is 0 when every client sees the global label mix (an IID
split, up to sampling noise) and approaches 1 when clients hold disjoint labels. The mean is
unweighted, so each client counts once whatever its size: it describes what a uniformly sampled
client sees, which is what cohort sampling draws. Label-skew studies such as Hsu et al. (2019),
"Measuring the Effects of Non-Identical Data Distribution for Federated Visual Classification",
control this skew through a Dirichlet concentration; the report measures the outcome instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedloom.data._checks import check_int


@dataclass(frozen=True, eq=False)
class PartitionReport:
    """Per-client label counts of the training data and the mean TV distance to the global mix.

    ``counts`` is ``[clients, classes]``; for regression it is ``[clients, 0]`` and ``distances``
    and ``skew`` are NaN, because a label histogram does not apply.
    """

    counts: npt.NDArray[np.int64]
    sizes: npt.NDArray[np.int64]
    distances: npt.NDArray[np.float64]
    skew: float

    @classmethod
    def from_labels(
        cls, labels: Sequence[npt.NDArray[Any]], *, num_classes: int | None
    ) -> PartitionReport:
        """Build the report from each client's training labels (ints in ``0..num_classes-1``)."""
        sizes = np.array([len(y) for y in labels], dtype=np.int64)
        if num_classes is None:
            return cls(
                counts=np.zeros((len(labels), 0), dtype=np.int64),
                sizes=sizes,
                distances=np.full(len(labels), np.nan),
                skew=math.nan,
            )
        classes = check_int("num_classes", num_classes, minimum=1)
        counts = np.zeros((len(labels), classes), dtype=np.int64)
        for row, y in zip(counts, labels, strict=True):
            row[:] = np.bincount(np.asarray(y, dtype=np.int64), minlength=classes)[:classes]
        total = counts.sum()
        overall = counts.sum(axis=0) / total if total else np.zeros(classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            local = counts / sizes[:, None]
        distances = 0.5 * np.abs(local - overall).sum(axis=1)
        distances[sizes == 0] = np.nan
        skew = float(np.nanmean(distances)) if np.any(sizes > 0) else math.nan
        return cls(counts=counts, sizes=sizes, distances=distances, skew=skew)

    def table(self, max_rows: int = 20) -> str:
        """A text table: client, training size, per-class counts and TV distance per client.

        At most ``max_rows`` clients are listed; a final line gives the totals and the skew.
        """
        shown = check_int("max_rows", max_rows, minimum=1)
        classes = self.counts.shape[1]
        header = ["client", "n", *(str(c) for c in range(classes)), "TV"]
        rows = [
            [str(k), str(int(n)), *(str(int(v)) for v in counts), _fmt(float(d))]
            for k, (n, counts, d) in enumerate(
                zip(self.sizes, self.counts, self.distances, strict=True)
            )
        ]
        hidden = len(rows) - shown
        rows = rows[:shown]
        if hidden > 0:
            rows.append([f"({hidden} more)", *([""] * (len(header) - 1))])
        total = [str(int(v)) for v in self.counts.sum(axis=0)]
        rows.append(["all", str(int(self.sizes.sum())), *total, ""])
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
        head = "  ".join(cell.rjust(w) for cell, w in zip(header, widths, strict=True))
        summary = f"skew (mean TV distance to the pooled label distribution): {_fmt(self.skew)}"
        return "\n".join([head, *lines, summary])


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"
