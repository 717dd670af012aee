"""``fedloom audit verify RUN`` and ``fedloom audit report RUN``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fedloom.compliance import compliance_report, verify_run
from fedloom.store import RunStore, StoreError

STORE_FILE = "fedloom.db"


def _open(runs_dir: Path) -> RunStore:
    path = runs_dir / STORE_FILE
    if not path.exists():
        raise StoreError(f"no run store at {path}; run an experiment first or pass --runs DIR")
    return RunStore.open(path, create=False)


runs_option = click.option(
    "--runs", "runs_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
    envvar="FEDLOOM_RUNS", show_default=True, help="Directory holding the run store.",
)  # fmt: skip


@click.group()
def audit() -> None:
    """Check and summarize runs' audit trails."""


@audit.command()
@click.argument("run_id", metavar="RUN")
@runs_option
@click.option("--head", metavar="HASH", help="A head hash published earlier, to check against.")
def verify(run_id: str, runs_dir: Path, head: str | None) -> None:
    """Check RUN's hash chain; name the first entry altered, removed or out of order.

    Exits 0 when the trail is intact, 1 when it is not.
    """
    with _open(runs_dir) as store:
        info = store.run(run_id)
        result = verify_run(store, info, expected_head=head)
    if result.ok:
        click.echo(
            f"run {info.id}: audit trail intact, {result.entries} entries, head {result.head}"
        )
        return
    click.echo(f"run {info.id}: audit trail FAILED at {result.problem}", err=True)
    sys.exit(1)


@audit.command()
@click.argument("run_id", metavar="RUN")
@runs_option
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Output file (default: RUNS/reports/RUN-compliance.md).",
)  # fmt: skip
def report(run_id: str, runs_dir: Path, out: Path | None) -> None:
    """Write RUN's compliance summary (Markdown) for a data-protection officer."""
    with _open(runs_dir) as store:
        info = store.run(run_id)
        text = compliance_report(store, info.id)
    path = out if out is not None else runs_dir / "reports" / f"{info.id}-compliance.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {path}")
