"""A run's structured results: one record per round, readable as a table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedloom.core.layout import Layout, Vector


@dataclass(frozen=True)
class Rejection:
    """A client whose answer the server refused this round, and why."""

    client: int
    reason: str


@dataclass(frozen=True)
class RoundRecord:
    """What happened in one round.

    ``cohort`` lists the sampled clients; ``accepted`` those whose updates entered the aggregate;
    ``rejected`` the others with reasons (bad update, client failure). ``aborted`` says why the
    round changed nothing, when fewer than the minimum cohort answered usefully.
    """

    round: int
    cohort: tuple[int, ...]
    accepted: tuple[int, ...]
    rejected: tuple[Rejection, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    aborted: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class History:
    """Every round of a run, the final parameters and their layout."""

    records: tuple[RoundRecord, ...]
    params: Vector
    layout: Layout
    stopped: str = ""

    def __len__(self) -> int:
        return len(self.records)

    def metric(self, name: str) -> list[float]:
        """One metric per round (``nan`` where a round did not report it)."""
        return [float(r.metrics.get(name, math.nan)) for r in self.records]

    def last(self, name: str) -> float:
        """The latest reported value of a metric; ``nan`` if none was reported."""
        for r in reversed(self.records):
            if name in r.metrics:
                return float(r.metrics[name])
        return math.nan

    @property
    def metric_names(self) -> list[str]:
        names: dict[str, None] = {}
        for r in self.records:
            names.update(dict.fromkeys(r.metrics))
        return list(names)

    def table(self, columns: Sequence[str] | None = None, *, max_rows: int | None = None) -> str:
        """A plain-text table: round, clients accepted/sampled, then the chosen metrics."""
        cols = list(columns) if columns is not None else _default_columns(self.metric_names)
        header = ["round", "clients", *cols]
        rows = [
            [
                str(r.round),
                f"{len(r.accepted)}/{len(r.cohort)}" + (" aborted" if r.aborted else ""),
                *(_fmt(r.metrics.get(c)) for c in cols),
            ]
            for r in self.records
        ]
        if max_rows is not None and len(rows) > max_rows:
            head = max_rows // 2
            rows = [*rows[:head], ["…"] * len(header), *rows[len(rows) - (max_rows - head) :]]
        widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
        if self.stopped:
            lines.append(f"stopped: {self.stopped}")
        return "\n".join(lines)


_PREFERRED = (
    "train_loss",
    "test_loss",
    "test_accuracy",
    "client_test_loss",
    "client_test_accuracy",
    "dp.epsilon",
)


def _default_columns(names: list[str]) -> list[str]:
    return [n for n in _PREFERRED if n in names]


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    v = float(value)
    if v.is_integer() and abs(v) < 1e9:
        return str(int(v))
    return f"{v:.4f}"


def weighted_average(
    values: Sequence[Mapping[str, float]], weights: Sequence[int]
) -> dict[str, float]:
    """Per-key weighted mean over dicts, each key averaged over the dicts that have it."""
    keys: dict[str, None] = {}
    for v in values:
        keys.update(dict.fromkeys(v))
    out = {}
    for key in keys:
        pairs = [(v[key], w) for v, w in zip(values, weights, strict=True) if key in v and w > 0]
        if pairs:
            vals, ws = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs], dtype=float)
            out[key] = float(vals @ ws / ws.sum())
    return out
