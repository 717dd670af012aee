"""The ``fedloom`` command: run experiments from TOML files, list, show, compare and report runs.

Every command that reads or writes runs takes ``--runs DIR`` (default ``./runs``, or the
``FEDLOOM_RUNS`` environment variable); the store is the SQLite file ``DIR/fedloom.db``.
Errors a user can cause print one line, ``error: …``, and exit with status 2; nothing is left
half-written.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from fedloom.cli import grpc_log
from fedloom.cli.audit import audit
from fedloom.cli.dashboard import dashboard
from fedloom.cli.privacy import privacy as privacy_commands
from fedloom.cli.progress import Mode, RoundProgress
from fedloom.core.errors import MissingExtra
from fedloom.engine import RoundRecord, ServerState
from fedloom.experiment import Experiment, ExperimentError, load_experiment, validate_file
from fedloom.reporting import RunSeries, comparison_rows, plot_runs, write_report
from fedloom.runner import RoundObserver, run_experiment
from fedloom.store import RunInfo, RunStore, StoreError
from fedloom.tracking import MetricsSink, MLflowSink, TensorBoardSink, TrackingError

STORE_FILE = "fedloom.db"

runs_option = click.option(
    "--runs",
    "runs_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs"),
    envvar="FEDLOOM_RUNS",
    show_default=True,
    help="Directory holding the run store.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fedloom")
def cli() -> None:
    """Federated learning experiments: run, inspect, compare and report."""


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@runs_option
@click.option("--resume", "resume", metavar="RUN", help="Continue RUN from its last checkpoint.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the run id.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per round, then a summary.")
@click.option(
    "--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write a comparison PNG."
)
@click.option(
    "--mlflow", "mlflow_uri", metavar="URI", help="Also log metrics to this MLflow store."
)
@click.option(
    "--tensorboard", type=click.Path(file_okay=False, path_type=Path),
    help="Also write TensorBoard scalars under this directory.",
)  # fmt: skip
def run(
    files: tuple[Path, ...],
    runs_dir: Path,
    resume: str | None,
    quiet: bool,
    as_json: bool,
    plot: Path | None,
    mlflow_uri: str | None,
    tensorboard: Path | None,
) -> None:
    """Train the experiment in each FILE (or resume RUN) and record it in the run store."""
    if resume is not None and files:
        raise click.UsageError("--resume takes the experiment from the store; give no FILE")
    if resume is None and not files:
        raise click.UsageError("give at least one experiment FILE, or --resume RUN")
    mode: Mode = "json" if as_json else "quiet" if quiet else "auto"
    experiments = [load_experiment(f) for f in files]  # validate every file before training
    with _store(runs_dir) as store:
        jobs: list[tuple[Experiment, str | None, int]] = [(e, None, 0) for e in experiments]
        if resume is not None:
            info = store.run(resume)
            jobs = [(Experiment.from_toml(info.config, source=f"run {info.id}"), info.id,
                     info.rounds_done)]  # fmt: skip
        finished = []
        for experiment, resume_id, done in jobs:
            sinks = _sinks(experiment, mlflow_uri, tensorboard)
            try:
                with RoundProgress(
                    name=experiment.name, rounds=experiment.run.rounds, done=done, mode=mode
                ) as progress:
                    observe = _fan_out([progress.update, *sinks])
                    outcome = run_experiment(experiment, store, resume=resume_id, on_round=observe)
            finally:
                for sink in sinks:
                    sink.close()
            finished.append(outcome.run_id)
            info = store.run(outcome.run_id)
            if mode == "quiet":
                click.echo(outcome.run_id)
            elif mode == "json":
                click.echo(json.dumps(_summary(info)))
            else:
                _console().print(
                    f"\n[bold]{info.name}[/] run [bold]{info.id}[/]: {info.status}; {info.stopped}"
                )
                click.echo(outcome.history.table(max_rows=20))
        series = [RunSeries(store.run(r), store.rounds(r)) for r in finished]
    if len(series) > 1 and mode not in ("quiet", "json"):
        _print_table(*comparison_rows(series), title="comparison")
    if plot is not None:
        plot_runs(series, plot, title=", ".join(s.info.name for s in series))
        if mode not in ("quiet", "json"):
            click.echo(f"wrote {plot}")


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check experiment FILEs without loading data or training."""
    for path in files:
        experiment = validate_file(path)
        click.echo(f"{path}: ok ({experiment.name})")


@cli.command(name="runs")
@runs_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_runs(runs_dir: Path, as_json: bool) -> None:
    """List recorded runs, newest first."""
    with _store(runs_dir, create=False) as store:
        infos = store.runs()
        shown = {i.id: store.shown_status(i) for i in infos}  # a killed run is not "running"
    if as_json:
        click.echo(json.dumps([_summary(i) | {"shown_status": shown[i.id]} for i in infos],
                              indent=2))  # fmt: skip
        return
    rows = [
        [i.id, i.name, shown[i.id], str(i.rounds_done),
         _fmt(i.last_metrics.get("test_accuracy")), i.created]
        for i in infos
    ]  # fmt: skip
    _print_table(["run", "name", "status", "rounds", "test acc", "created"], rows, title="runs")


@cli.command()
@click.argument("run_id", metavar="RUN")
@runs_option
@click.option("--config", "config_only", is_flag=True, help="Print only the run's TOML.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(run_id: str, runs_dir: Path, config_only: bool, as_json: bool) -> None:
    """Print one run: its summary, configuration and per-round metrics."""
    with _store(runs_dir, create=False) as store:
        info = store.run(run_id)
        rounds = store.rounds(info.id)
        sites = store.sites(info.id)  # a deployed run's client index → certificate identity
        status = store.shown_status(info)
    if config_only:
        click.echo(info.config, nl=False)
        return
    if as_json:
        out = _summary(info) | {
            "shown_status": status,
            "config": info.config,
            "rounds": [
                {"round": r.round, "cohort": list(r.cohort), "accepted": list(r.accepted),
                 "rejected": [{"client": x.client, "reason": x.reason} for x in r.rejected],
                 "aborted": r.aborted, "seconds": r.seconds,
                 "metrics": {k: _json_number(v) for k, v in r.metrics.items()}}
                for r in rounds
            ],
        }  # fmt: skip
        if sites:
            out["sites"] = sites
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(
        f"run {info.id}  {info.name}  {status}  seed {info.seed}  code {info.code_version}\n"
        f"created {info.created}  finished {info.finished or '-'}  {info.stopped}"
    )
    if sites:
        click.echo("sites: " + ", ".join(f"{i}={name}" for i, name in enumerate(sites)))
    click.echo("")
    click.echo(info.config)
    metrics: tuple[str, ...] = (
        "train_loss", "test_loss", "test_accuracy", "client_test_accuracy", "bytes_up",
    )  # fmt: skip
    if any("dp.epsilon" in r.metrics for r in rounds):
        metrics = (*metrics, "dp.epsilon")  # the privacy spent after each round
    header = ["round", "clients", "rejected", *metrics]
    rows = [
        [str(r.round), f"{len(r.accepted)}/{len(r.cohort)}", str(len(r.rejected)),
         *(_fmt(r.metrics.get(m)) for m in metrics)]
        for r in rounds
    ]  # fmt: skip
    _print_table(header, rows, title=f"{info.name} per round")


@cli.command()
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN...")
@runs_option
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG.")
def compare(run_ids: tuple[str, ...], runs_dir: Path, plot: Path | None) -> None:
    """Put runs side by side."""
    with _store(runs_dir, create=False) as store:
        series = _series(store, run_ids)
    _print_table(*comparison_rows(series), title="comparison")
    if plot is not None:
        plot_runs(series, plot, title=", ".join(s.info.name for s in series))
        click.echo(f"wrote {plot}")


@cli.command()
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN...")
@runs_option
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Output directory (default: RUNS/reports/FIRST-RUN).",
)  # fmt: skip
def report(run_ids: tuple[str, ...], runs_dir: Path, out: Path | None) -> None:
    """Write plots (PNG) and a Markdown summary for one or more runs."""
    with _store(runs_dir, create=False) as store:
        series = _series(store, run_ids)
    directory = out if out is not None else runs_dir / "reports" / series[0].info.id
    for path in write_report(series, directory):
        click.echo(f"wrote {path}")


cli.add_command(dashboard)
cli.add_command(audit)


def _fan_out(observers: Sequence[RoundObserver]) -> RoundObserver:
    def observe(record: RoundRecord, state: ServerState) -> None:
        for observer in observers:
            observer(record, state)

    return observe


def _sinks(
    experiment: Experiment, mlflow_uri: str | None, tensorboard: Path | None
) -> list[MetricsSink]:
    sinks: list[MetricsSink] = []
    if tensorboard is not None:
        sinks.append(TensorBoardSink(tensorboard, run_name=experiment.name))
    if mlflow_uri is not None:
        params = {
            "algorithm": experiment.algorithm.name,
            "rounds": experiment.run.rounds,
            "seed": experiment.run.seed,
            "dataset": experiment.data.dataset,
        }
        sinks.append(MLflowSink(mlflow_uri, run_name=experiment.name, params=params))
    return sinks


def _series(store: RunStore, run_ids: Sequence[str]) -> list[RunSeries]:
    infos = [store.run(r) for r in run_ids]
    return [RunSeries(i, store.rounds(i.id)) for i in infos]


def _store(runs_dir: Path, *, create: bool = True) -> RunStore:
    path = runs_dir / STORE_FILE
    if not create and not path.exists():
        raise StoreError(f"no run store at {path}; run an experiment first or pass --runs DIR")
    return RunStore.open(path, create=create)


def _summary(info: RunInfo) -> dict[str, Any]:
    return {
        "run": info.id,
        "name": info.name,
        "status": info.status,
        "rounds": info.rounds_done,
        "seed": info.seed,
        "code_version": info.code_version,
        "created": info.created,
        "finished": info.finished,
        "duration": info.duration,
        "stopped": info.stopped,
        "metrics": {k: _json_number(v) for k, v in info.last_metrics.items()},
    }


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*row)
    _console().print(table)


def _console() -> Console:
    # Wide enough for the tables when output goes to a file or a pipe.
    return Console(width=None if sys.stdout.isatty() else 160)


def _fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.4f}"


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


cli.add_command(privacy_commands)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: user errors become one ``error:`` line and exit status 2. Run as the
    command (``argv`` None: the process is ours), a command serving gRPC over TLS first turns
    gRPC's handshake log into warnings that name the peer (:mod:`fedloom.cli.grpc_log`)."""
    if argv is None and grpc_log.wanted(sys.argv[1:]):
        grpc_log.install()
    try:
        cli.main(args=argv, prog_name="fedloom", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except (
        ExperimentError, StoreError, TrackingError, MissingExtra, FileNotFoundError,
        PermissionError,
    ) as error:  # fmt: skip
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted; resume with `fedloom run --resume RUN`", err=True)
        sys.exit(130)


from fedloom.cli.ca import ca  # noqa: E402  (subcommand modules register on the group)
from fedloom.cli.deploy import client, server  # noqa: E402
from fedloom.cli.relay import relay  # noqa: E402

cli.add_command(ca)
cli.add_command(server)
cli.add_command(client)
cli.add_command(relay)
