"""``make bench``: one workload set on fedloom's executors, Flower and a plain PyTorch loop.

Every system runs each workload in its own fresh process, launched and measured from here
(:mod:`measure`): whole-process wall time and peak memory of the process tree from outside,
per-round times and final test accuracy reported by the process itself. All of them train on
the same data file (:mod:`shared_data`) with one compute thread per process. The tables go to
``docs/benchmarks.md`` with the command that made them, the raw runs to ``bench/results.json``.

    python bench/run.py                    # the full benchmark, 3 runs each (about 12 minutes)
    python bench/run.py --quick            # seconds-long workloads, to check the machinery
    python bench/run.py --workloads W1 --systems plain,fedloom-vectorized --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import flower_env
import psutil
from measure import run_measured
from render import Summary, machine_description, markdown
from shared_data import feasible, write_digits
from workloads import WORKLOADS, Workload, quick

from fedloom.executors import EXECUTORS

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MEMORY_LIMIT_MB = 0.5 * psutil.virtual_memory().total / 2**20
"""A run whose process tree holds more is killed: the machine is shared with other work."""


@dataclass(frozen=True)
class System:
    """Something that can run a workload: a runner script, with the Python that runs it."""

    name: str
    script: str
    arguments: tuple[str, ...] = ()
    flower: bool = False
    digits_only: bool = False

    def runs(self, workload: Workload) -> bool:
        return workload.dataset == "digits" or not self.digits_only


SYSTEMS = {
    s.name: s
    for s in (
        System("plain", "system_plain.py", digits_only=True),
        *(System(f"fedloom-{e}", "system_fedloom.py", ("--executor", e)) for e in EXECUTORS),
        System("flower", "system_flower.py", flower=True, digits_only=True),
    )
}


@dataclass(frozen=True)
class Run:
    """One run of one system on one workload. Times in seconds, memory in MB (2**20 bytes).

    ``startup_seconds`` runs from launch to the start of training (interpreter, imports, data,
    and for Flower starting Ray); ``round_seconds`` is the median of the rounds after the first.
    """

    workload: str
    system: str
    repeat: int
    status: str
    wall_seconds: float = float("nan")
    startup_seconds: float = float("nan")
    first_round_seconds: float = float("nan")
    round_seconds: float = float("nan")
    peak_rss_mb: float = float("nan")
    peak_pss_mb: float = float("nan")
    peak_processes: int = 0
    accuracy: float = float("nan")
    data_seconds: float = float("nan")
    load_before: float = float("nan")

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def child_environment() -> dict[str, str]:
    """One compute thread per process for every system; no telemetry; runner modules importable."""
    env = dict(os.environ)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[variable] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")]))
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def run_one(
    system: System,
    workload: Workload,
    *,
    data: Path | None,
    python: Path,
    directory: Path,
    repeat: int = 0,
    timeout: float = 600.0,
    memory_limit_mb: float = MEMORY_LIMIT_MB,
) -> Run:
    """Run ``system`` on ``workload`` in a fresh process and measure it."""
    stem = f"{workload.name}-{system.name}-{repeat}"
    result, log = directory / f"{stem}.json", directory / f"{stem}.log"
    command = [
        str(python),
        str(BENCH / system.script),
        "--workload",
        workload.to_json(),
        "--data",
        str(data or ""),
        "--result",
        str(result),
        *system.arguments,
    ]
    load_before = os.getloadavg()[0]
    launched = time.time()
    measured = run_measured(
        command,
        env=child_environment(),
        timeout=timeout,
        memory_limit_mb=memory_limit_mb,
        log_path=log,
    )
    base = {
        "workload": workload.name,
        "system": system.name,
        "repeat": repeat,
        "wall_seconds": measured.wall_seconds,
        "peak_rss_mb": measured.peak_rss_mb,
        "peak_pss_mb": measured.peak_pss_mb,
        "peak_processes": measured.peak_processes,
        "load_before": load_before,
    }
    if measured.killed:
        return Run(status=measured.killed, **base)
    if measured.returncode != 0 or not result.exists():
        code = measured.returncode
        ended = f"killed by signal {-code}" if code < 0 else f"exit {code}"
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        return Run(status=" / ".join([ended, *tail]), **base)
    outcome = json.loads(result.read_text())
    rounds = outcome["round_seconds"]
    return Run(
        status="ok",
        startup_seconds=outcome["train_started"] - launched,
        first_round_seconds=rounds[0],
        round_seconds=statistics.median(rounds[1:] or rounds),
        accuracy=outcome["accuracy"],
        data_seconds=outcome.get("data_seconds", float("nan")),
        **base,
    )


def summarize(runs: list[Run], workload: Workload, system: str) -> Summary | None:
    mine = [r for r in runs if r.workload == workload.name and r.system == system]
    if not mine:
        return None
    good = [r for r in mine if r.ok]
    if not good:
        last = mine[-1]
        return Summary(
            system,
            len(mine),
            0,
            last.status,
            wall_seconds=last.wall_seconds,
            peak_rss_mb=last.peak_rss_mb,
        )

    def median(field: str) -> float:
        return statistics.median(getattr(r, field) for r in good)

    return Summary(
        system=system,
        runs=len(mine),
        ok=len(good),
        status="ok",
        wall_seconds=median("wall_seconds"),
        startup_seconds=median("startup_seconds"),
        first_round_seconds=median("first_round_seconds"),
        round_seconds=median("round_seconds"),
        peak_rss_mb=median("peak_rss_mb"),
        peak_pss_mb=median("peak_pss_mb"),
        peak_processes=int(median("peak_processes")),
        accuracy=median("accuracy"),
        data_seconds=median("data_seconds"),
    )


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny workloads (a smoke test)")
    parser.add_argument("--render", type=Path, help="only rewrite the page from a results file")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="e.g. W1,W2")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"from {list(SYSTEMS)}")
    parser.add_argument("--repeats", type=int, help="runs per system, for medians (3; --quick 1)")
    parser.add_argument("--flower-repeats", type=int, help="runs of Flower (as --repeats)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run, then killed")
    parser.add_argument(
        "--memory-limit",
        type=float,
        default=MEMORY_LIMIT_MB,
        help="MB of RSS per run, then killed (half the machine's memory)",
    )
    parser.add_argument(
        "--w3-devices", type=int, help="W3's device count, past the memory budget (shared_data.py)"
    )
    parser.add_argument("--flower-venv", type=Path, default=BENCH / ".venv-flower")
    parser.add_argument("--output", type=Path, help="default docs/benchmarks.md (--quick: temp)")
    parser.add_argument("--results", type=Path, help="default bench/results.json (--quick: temp)")
    args = parser.parse_args()
    unknown = set(args.workloads.split(",")) - set(WORKLOADS) | (
        set(args.systems.split(",")) - set(SYSTEMS)
    )
    if unknown:
        parser.error(f"unknown workloads or systems {sorted(unknown)}")
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.flower_repeats = args.flower_repeats or args.repeats
    return args


def main() -> None:
    args = parse_arguments()
    if args.render:
        output = args.output or ROOT / "docs" / "benchmarks.md"
        output.write_text(page(json.loads(args.render.read_text())))
        print(f"wrote {output}")
        return
    # A terminated driver unwinds, so the run in progress is killed with it (measure.py).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    systems = [SYSTEMS[name] for name in args.systems.split(",")]
    chosen = [WORKLOADS[name] for name in args.workloads.split(",")]
    if args.w3_devices:
        chosen = [replace(w, clients=args.w3_devices) if w.name == "W3" else w for w in chosen]
    workloads = [
        (w, "") if w.name == "W3" and args.w3_devices else feasible(quick(w) if args.quick else w)
        for w in chosen
    ]

    directory = Path(tempfile.mkdtemp(prefix="fedloom-bench-"))
    print(f"benchmark files in {directory}", flush=True)
    output = args.output or (directory if args.quick else ROOT / "docs") / "benchmarks.md"
    results = args.results or (directory if args.quick else BENCH) / "results.json"
    flower_error = None
    if any(s.flower for s in systems):
        print(f"Flower environment: {args.flower_venv}", flush=True)
        flower_error = flower_env.ensure(args.flower_venv, directory / "flower-install.log")
        if flower_error:
            print(f"  Flower cannot run: {flower_error}", flush=True)

    runs: list[Run] = []
    for workload, note in workloads:
        print(f"{workload.name}: {workload.title}" + (f" ({note})" if note else ""), flush=True)
        data = None
        if workload.dataset == "digits":
            data = directory / f"{workload.name}.npz"
            write_digits(workload, data)
        failed: set[str] = set()
        for repeat in range(max(args.repeats, args.flower_repeats)):
            for system in systems:
                wanted = args.flower_repeats if system.flower else args.repeats
                if not system.runs(workload) or repeat >= wanted or system.name in failed:
                    continue
                if system.flower and flower_error:
                    runs.append(Run(workload.name, system.name, repeat, flower_error))
                    continue
                python = flower_env.python_in(args.flower_venv) if system.flower else sys.executable
                run = run_one(
                    system,
                    workload,
                    data=data,
                    python=Path(python),
                    directory=directory,
                    repeat=repeat,
                    timeout=args.timeout,
                    memory_limit_mb=args.memory_limit,
                )
                runs.append(run)
                if not run.ok:  # a failure or time-out is not retried: it would repeat
                    failed.add(system.name)
                print(
                    f"  {system.name:<20} {run.status if not run.ok else 'ok':<4} "
                    f"wall {run.wall_seconds:7.1f} s  round {run.round_seconds:7.3f} s  "
                    f"RSS {run.peak_rss_mb:7.0f} MB  PSS {run.peak_pss_mb:7.0f} MB  "
                    f"accuracy {run.accuracy:.3f}",
                    flush=True,
                )

    report = {
        "command": ("python bench/run.py " + shlex.join(sys.argv[1:])).strip(),
        "machine": machine_description(
            flower_env.version(args.flower_venv, "flwr") if any(s.flower for s in systems) else None
        ),
        "workloads": [{"workload": asdict(w), "note": note} for w, note in workloads],
        "systems": [s.name for s in systems],
        "flower_error": flower_error,
        "repeats": [args.repeats, args.flower_repeats],
        "runs": [asdict(r) for r in runs],
    }
    results.write_text(json.dumps(report, indent=1))
    output.write_text(page(report))
    print(f"wrote {output} and {results}", flush=True)


def page(report: dict[str, Any]) -> str:
    """The Markdown page for a report that ``main`` wrote to the results file."""
    workloads = [(Workload.from_dict(w["workload"]), w["note"]) for w in report["workloads"]]
    runs = [Run(**r) for r in report["runs"]]
    summaries = {
        w.name: [s for s in (summarize(runs, w, name) for name in report["systems"]) if s]
        for w, _ in workloads
    }
    loads = [r.load_before for r in runs if not math.isnan(r.load_before)]
    machine = dict(report["machine"])
    if loads:
        machine["1-minute load average before each run"] = f"{min(loads):.1f} to {max(loads):.1f}"
    return markdown(
        command=report["command"],
        machine=machine,
        workloads=workloads,
        summaries=summaries,
        flower_error=report["flower_error"],
        repeats=tuple(report["repeats"]),
    )


if __name__ == "__main__":
    main()
