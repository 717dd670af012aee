"""``fedloom dashboard``: serve the live web dashboard over a run store."""

from __future__ import annotations

import os
from pathlib import Path

import click

from fedloom.dashboard import DashboardConfig, make_server

STORE_FILE = "fedloom.db"


def _default_store() -> Path:
    return Path(os.environ.get("FEDLOOM_RUNS", "runs")) / STORE_FILE


@click.command()
@click.option(
    "--store", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Run store file [default: RUNS/fedloom.db, RUNS from FEDLOOM_RUNS or ./runs].",
)  # fmt: skip
@click.option(
    "--host", default="127.0.0.1", show_default=True,
    help="Address to listen on; anything but loopback needs --token.",
)  # fmt: skip
@click.option("--port", default=8765, show_default=True, type=int, help="Port; 0 picks one.")
@click.option(
    "--token", envvar="FEDLOOM_DASHBOARD_TOKEN", default=None,
    help="Access token (or FEDLOOM_DASHBOARD_TOKEN): needed to stop runs, and for every "
    "request when --host is not loopback. At least 16 characters.",
)  # fmt: skip
@click.option(
    "--poll", "poll_seconds", default=2.0, show_default=True, type=float,
    help="Seconds between updates on pages of runs in progress.",
)  # fmt: skip
def dashboard(
    store: Path | None, host: str, port: int, token: str | None, poll_seconds: float
) -> None:
    """Serve a web page of runs: metrics per round updating live, clients, bytes, privacy."""
    path = store if store is not None else _default_store()
    try:
        config = DashboardConfig(
            store=path, host=host, port=port, token=token, poll_seconds=poll_seconds
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        server = make_server(config)
    except OSError as error:
        raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror}") from None
    click.echo(f"fedloom dashboard on {server.url} (store {path}); Ctrl-C stops it", color=False)
    if not path.is_file():
        click.echo(f"note: no store at {path} yet; the page says so until a run creates it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("dashboard stopped")
    finally:
        server.server_close()
