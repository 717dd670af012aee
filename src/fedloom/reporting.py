"""Reports on recorded runs: comparison tables, plots (PNG) and a Markdown summary.

Plots use matplotlib's object API (``Figure`` with the Agg canvas), so nothing touches global
pyplot state and no display is needed. matplotlib is the ``report`` extra: a clear error says so
when it is missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedloom.core.errors import MissingExtra
from fedloom.engine import RoundRecord
from fedloom.store import RunInfo

ACCURACY = ("test_accuracy", "client_test_accuracy")
LOSS = ("test_loss", "client_test_loss", "train_loss")
BYTES = ("bytes_up", "bytes_down")


@dataclass(frozen=True)
class RunSeries:
    """One run's id, label and rounds, as the store returns them."""

    info: RunInfo
    rounds: Sequence[RoundRecord]

    @property
    def label(self) -> str:
        return f"{self.info.name} ({self.info.id})"

    def series(self, metric: str) -> tuple[list[int], list[float]]:
        """Rounds that reported ``metric`` and its values there."""
        xs, ys = [], []
        for r in self.rounds:
            value = r.metrics.get(metric)
            if value is not None and not math.isnan(value):
                xs.append(r.round + 1)
                ys.append(float(value))
        return xs, ys

    def final(self, metric: str) -> float:
        ys = self.series(metric)[1]
        return ys[-1] if ys else math.nan

    def best(self, metric: str, *, higher: bool = True) -> float:
        ys = self.series(metric)[1]
        if not ys:
            return math.nan
        return max(ys) if higher else min(ys)

    def total(self, metric: str) -> float:
        return float(sum(self.series(metric)[1]))


def comparison_rows(runs: Sequence[RunSeries]) -> tuple[list[str], list[list[str]]]:
    """Header and rows comparing runs: status, rounds, final and best accuracy, loss, bytes."""
    header = [
        "run", "name", "algorithm", "status", "rounds", "final acc", "best acc", "final loss",
        "MB up", "MB down", "seconds",
    ]  # fmt: skip
    rows = []
    for run in runs:
        rows.append([
            run.info.id,
            run.info.name,
            _algorithm_of(run.info),
            run.info.status,
            str(run.info.rounds_done),
            _fmt(run.final("test_accuracy")),
            _fmt(run.best("test_accuracy")),
            _fmt(run.final("test_loss")),
            _fmt(run.total("bytes_up") / 1e6, 2),
            _fmt(run.total("bytes_down") / 1e6, 2),
            _fmt(run.info.duration if run.info.duration is not None else math.nan, 1),
        ])  # fmt: skip
    return header, rows


def plot_runs(runs: Sequence[RunSeries], path: Path, *, title: str = "") -> Path:
    """Write a PNG with accuracy, loss and bytes moved per round for every run."""
    figure_cls, canvas_cls = _matplotlib()
    figure = figure_cls(figsize=(13, 4), dpi=110)
    axes = figure.subplots(1, 3)
    panels: list[tuple[Any, tuple[str, ...], str]] = [
        (axes[0], ACCURACY, "accuracy"),
        (axes[1], LOSS, "loss"),
        (axes[2], BYTES, "MB moved, cumulative"),
    ]
    styles = {metric: style for metrics in (ACCURACY, LOSS, BYTES) for metric, style in
              zip(metrics, ("-", "--", ":"), strict=False)}  # fmt: skip
    for ax, metrics, ylabel in panels:
        for index, run in enumerate(runs):
            color = f"C{index % 10}"
            for metric in metrics:
                xs, ys = run.series(metric)
                if not xs:
                    continue
                if metric in BYTES:
                    ys = [sum(ys[: i + 1]) / 1e6 for i in range(len(ys))]
                ax.plot(xs, ys, styles[metric], color=color, linewidth=1.4,
                        label=f"{run.info.name}: {metric}")  # fmt: skip
        ax.set_xlabel("round")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas_cls(figure).print_png(str(path))
    return path


def markdown_summary(runs: Sequence[RunSeries], plot: Path | None = None) -> str:
    """A short Markdown summary naming each run, with the comparison table and the plot."""
    header, rows = comparison_rows(runs)
    lines = ["# fedloom report", ""]
    for run in runs:
        info = run.info
        lines.append(
            f"- **{info.name}** (`{info.id}`): {info.status}, {info.rounds_done} rounds, "
            f"seed {info.seed}, code {info.code_version}, started {info.created}"
            + (f"; {info.stopped}" if info.stopped else "")
            + _privacy_spent(run)
        )
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if plot is not None:
        lines += ["", f"![accuracy, loss and bytes per round]({plot.name})"]
    return "\n".join(lines) + "\n"


def write_report(runs: Sequence[RunSeries], directory: Path, *, stem: str = "report") -> list[Path]:
    """Write ``STEM.png`` and ``STEM.md`` into ``directory``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    plot = plot_runs(runs, directory / f"{stem}.png", title=", ".join(r.info.name for r in runs))
    summary = directory / f"{stem}.md"
    summary.write_text(markdown_summary(runs, plot))
    return [plot, summary]


def _privacy_spent(run: RunSeries) -> str:
    """``; privacy spent: ε = …, δ = …`` for a run with differential privacy, else ``""``."""
    epsilon, delta = run.final("dp.epsilon"), run.final("dp.delta")
    if math.isnan(epsilon):
        return ""
    return f"; privacy spent: ε = {epsilon:.4g} at δ = {delta:.3g}"


def _algorithm_of(info: RunInfo) -> str:
    import tomllib

    try:
        name = tomllib.loads(info.config).get("algorithm", {}).get("name", "?")
    except tomllib.TOMLDecodeError:
        return "?"
    return str(name)


def _fmt(value: float, digits: int = 4) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - depends on the install
        raise MissingExtra("plots", "report") from error
    return Figure, FigureCanvasAgg
