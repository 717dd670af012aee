"""The benchmark's Markdown page: one table per workload, the method, the machine."""

from __future__ import annotations

import datetime
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import psutil
from workloads import Workload

NAN = float("nan")


@dataclass(frozen=True)
class Summary:
    """Medians over one system's successful runs of one workload (see ``run.Run``)."""

    system: str
    runs: int
    ok: int
    status: str
    wall_seconds: float = NAN
    startup_seconds: float = NAN
    first_round_seconds: float = NAN
    round_seconds: float = NAN
    peak_rss_mb: float = NAN
    peak_pss_mb: float = NAN
    peak_processes: int = 0
    accuracy: float = NAN
    data_seconds: float = NAN


def machine_description(flwr: str | None) -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    described = {
        "cpus": f"{os.cpu_count()} ({cpu})",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "fedloom": version("fedloom"),
        "torch": version("torch"),
        "numpy": version("numpy"),
    }
    if flwr is not None:
        described["flwr"] = flwr
    return described


def _read(path: str) -> str:
    file = Path(path)
    return file.read_text() if file.exists() else ""


def markdown(
    *,
    command: str,
    machine: Mapping[str, str],
    workloads: Sequence[tuple[Workload, str]],
    summaries: Mapping[str, Sequence[Summary]],
    flower_error: str | None,
    repeats: tuple[int, int],
) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        "# Benchmarks: fedloom, Flower and a plain PyTorch loop",
        "",
        f"Made on {today} by `make bench`, which runs `{command}` "
        "(`--repeats N` for more runs per system, `--quick` for a seconds-long check).",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()) + ".",
        "",
        *_method(repeats),
    ]
    if flower_error:
        lines += ["", f"**Flower did not run here**: {flower_error}"]
    for workload, note in workloads:
        lines += ["", *_section(workload, note, summaries.get(workload.name, ()))]
    return "\n".join(lines) + "\n"


def _method(repeats: tuple[int, int]) -> list[str]:
    fedloom_repeats, flower_repeats = repeats
    return [
        "How it is measured:",
        "",
        "- Every system runs every workload in a fresh process started by `bench/run.py`; "
        f"the tables show medians over {fedloom_repeats} run(s) per system "
        f"({flower_repeats} for Flower).",
        "- **wall**: from launching the process to its exit, measured by the driver: the "
        "interpreter, imports, loading data, (for Flower) starting Ray, every round and shutdown.",
        "- **round**: median time of the rounds after the first, measured inside the process "
        "from the end of one round to the end of the next; a round is sampling, local training "
        "of the cohort, aggregation and scoring the new global model on the central test set. "
        "**first round** and **startup** (launch to the start of training) are shown apart.",
        "- **memory**: the process tree (the runner and all its descendants, so Ray's GCS "
        "server, raylet and workers for Flower) is sampled every 0.2 s with psutil; the peak "
        "of the sum of resident set sizes (RSS) is the headline, the peak of the sum of "
        "proportional set sizes (PSS, which shares pages mapped by several processes, such as "
        "libtorch, among them) is beside it. MB = 2^20 bytes.",
        "- **accuracy**: the final global model on the central test set (20% of digits held "
        "out, stratified).",
        "- Fairness: `OMP_NUM_THREADS=MKL_NUM_THREADS=1` and `torch.set_num_threads(1)` in "
        "every process of every system. Flower's Ray backend gets all the machine's CPUs "
        "(`init_args.num_cpus`) and each simulated client 1 CPU (`client_resources = "
        '{"num_cpus": 1, "num_gpus": 0.0}`), so it trains as many clients at once as there '
        "are cores. The plain loop and fedloom's inprocess and vectorized executors use one "
        "process; fedloom's process executor (where registered) its default pool of workers.",
        "- Same data: the digits partition is made once with fedloom's partitioner "
        "(`dirichlet(0.5, min_size=1)`, or `dirichlet_mixture(0.5)` where the workload says "
        "so; seed 0, no local test split) and written to an "
        "`.npz` that every system reads. Same model (Linear 64→64, ReLU, Linear 64→10), "
        "same local training (minibatch SGD, reshuffled every epoch, last batch short), "
        "FedAvg weighted by example count.",
        "- Same cohorts and start: the data file also holds every round's cohort (drawn once "
        "from the workload's seed, uniformly without replacement) and the initial weights "
        "(PyTorch's default initialization under `torch.manual_seed(0)`). The plain loop reads "
        "both; fedloom replays the cohorts with `fl.replay(...)` and starts from the weights "
        "with `simulate(..., params=...)`; Flower runs `FedAvg` with its cohort sampling "
        "replaced by the schedule (node k of the sorted node ids plays client k, named in each "
        "round's train message) and the weights as `initial_arrays`. Only each system's own "
        "minibatch shuffles differ (fedloom's are counter-based per client, the others' come "
        "from a torch generator), so accuracies agree closely rather than exactly; where every "
        "client's data fits one batch (W2) they differ only by float summation order.",
        "- Systems: **plain** is a sequential PyTorch loop with no framework "
        "(`bench/system_plain.py`), the lower bound for sequential work; **fedloom-NAME** is "
        "`fedloom.simulate(..., executor=NAME)`; **flower** is "
        "`flwr.simulation.run_simulation` with a ServerApp running the message-based "
        "`FedAvg` strategy (with the shared cohorts, above) and a ClientApp doing the same "
        "local training as the plain loop.",
        "- The machine may be shared: a load average before a run above the CPU count means "
        "other work competed for the cores and inflated that run's times.",
        "- Ratios divide this system's time (or memory) by the reference's: below 1 is "
        "faster (or smaller) than Flower or the plain loop.",
    ]


def _section(workload: Workload, note: str, rows: Sequence[Summary]) -> list[str]:
    model = (
        f"MLP {'-'.join(str(w) for w in (64, *workload.hidden, 10))}"
        if workload.dataset == "digits"
        else "softmax regression (fedloom.SoftmaxRegression)"
    )
    lines = [
        f"## {workload.name}: {workload.title}",
        "",
        f"{workload.clients:,} clients, {workload.cohort:,} per round, {workload.rounds} rounds, "
        f"{workload.epochs} local epoch(s), batch {workload.batch_size}, SGD lr {workload.lr}, "
        f"{model}.",
    ]
    if note:
        lines += ["", f"Note: {note}."]
    generated = [r for r in rows if r.status == "ok" and r.data_seconds >= 1]
    if workload.dataset == "synthetic" and generated:
        times = ", ".join(f"{r.system} {r.data_seconds:.0f} s" for r in generated)
        lines += [
            "",
            f"Startup includes generating the devices with `fedloom.data.synthetic` ({times}).",
        ]
    if not rows:
        return lines
    reference = {r.system: r for r in rows if r.status == "ok"}
    flower, plain = reference.get("flower"), reference.get("plain")
    lines += [
        "",
        "| system | wall (s) | round (s) | first round (s) | startup (s) | peak RSS (MB) "
        "| peak PSS (MB) | processes | accuracy | wall ÷ Flower | round ÷ Flower "
        "| RSS ÷ Flower | round ÷ plain |",
        "|---|" + "---:|" * 12,
    ]
    for row in rows:
        if row.status != "ok":
            seen = (
                f" (after {row.wall_seconds:.0f} s, at a peak RSS of {row.peak_rss_mb:,.0f} MB)"
                if not math.isnan(row.wall_seconds)
                else ""
            )
            lines.append(f"| {row.system} | not measured: {_cell(row.status)}{seen} |" + " |" * 11)
            continue
        lines.append(
            "| "
            + " | ".join(
                [
                    row.system,
                    f"{row.wall_seconds:.1f}",
                    f"{row.round_seconds:.3f}",
                    f"{row.first_round_seconds:.2f}",
                    f"{row.startup_seconds:.1f}",
                    f"{row.peak_rss_mb:,.0f}",
                    f"{row.peak_pss_mb:,.0f}",
                    str(row.peak_processes),
                    f"{row.accuracy:.3f}",
                    _ratio(row.wall_seconds, flower and flower.wall_seconds),
                    _ratio(row.round_seconds, flower and flower.round_seconds),
                    _ratio(row.peak_rss_mb, flower and flower.peak_rss_mb),
                    _ratio(row.round_seconds, plain and plain.round_seconds),
                ]
            )
            + " |"
        )
    return lines


def _ratio(value: float, reference: float | None) -> str:
    if reference is None or not reference or math.isnan(reference):
        return "—"
    return f"{value / reference:.2f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
