"""``fedloom server`` and ``fedloom client``: a real federation over gRPC with mutual TLS."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fedloom.cli.ca import Refused, ca_dir_option, user_errors

if TYPE_CHECKING:
    from fedloom.dashboard import DashboardConfig
    from fedloom.deploy import FederationLive

SERVER_CERT = "server"
POLICY_REFUSED = 3
"""``fedloom client``'s exit status when its own policy refused the run's terms."""


class PolicyRefusal(click.ClickException):
    """This site's policy refused the run: the reason on one line, exit status 3."""

    exit_code = POLICY_REFUSED

    def show(self, file: object = None) -> None:
        click.echo(f"refused: {self.message}", err=True)


malloc_option = click.option(
    "--malloc-arenas",
    default=1,
    show_default=True,
    help="glibc malloc arenas this process may use, with chunk-sized blocks kept on the heap "
    "(fewer arenas keep less freed memory; 0: leave the allocator as it is, as MALLOC_ARENA_MAX "
    "in the environment does).",
)


def check_malloc_arenas(count: int) -> None:
    if count < 0:
        raise click.UsageError(
            f"--malloc-arenas must be 0 (leave the allocator as it is) or a count >= 1, got {count}"
        )


def tune_malloc(count: int, *, say: bool = True) -> None:
    """Set glibc's malloc for chunk traffic (:mod:`fedloom.transport.allocator`) before this
    process's gRPC threads start, unless ``count`` is 0; ``say``: log what was done."""
    from fedloom.transport.allocator import tune_malloc as tune

    if count:
        done = tune(count)
        if say:
            logging.getLogger("fedloom.transport").info("malloc: %s", done)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def _warn_insecure(who: str) -> None:
    click.echo(
        f"warning: {who} runs WITHOUT TLS (--insecure): updates cross the network in the clear "
        "and sites are not authenticated; use only on a trusted network or for testing",
        err=True,
    )


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@ca_dir_option
@click.option("--listen", default="0.0.0.0:50051", show_default=True, help="HOST:PORT to serve.")
@click.option(
    "--cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Server certificate (default DIR/sites/server.pem).",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Server key (default DIR/sites/server.key).",
)
@click.option(
    "--allowlist",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sites file (default DIR/allowlist.txt); its order is the population's.",
)
@click.option("--insecure", is_flag=True, help="Serve without TLS (prints a warning).")
@click.option("--wait", "wait_for", type=int, help="Sites to wait for before round 0 (all).")
@click.option("--deadline", default=60.0, show_default=True, help="Seconds a round waits.")
@click.option("--heartbeat", default=5.0, show_default=True, help="Heartbeat interval (s).")
@click.option(
    "--hello-timeout",
    default=10.0,
    show_default=True,
    help="Seconds a new connection may take over its TLS handshake, then stay silent before "
    "its Hello.",
)
@click.option("--chunk-bytes", default=1 << 20, show_default=True, help="Bytes per chunk.")
@click.option(
    "--uploads",
    default=2,
    show_default=True,
    help="Sites' replies the server holds at once (1: one model less in memory).",
)
@malloc_option
@click.option(
    "--runs",
    "runs_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs"),
    envvar="FEDLOOM_RUNS",
    show_default=True,
)
@click.option(
    "--resume",
    metavar="RUN",
    help="Continue RUN (default: the newest unfinished run of this experiment).",
)
@click.option("--new", is_flag=True, help="Start a new run even if one is unfinished.")
@click.option(
    "--dashboard", "with_dashboard", is_flag=True,
    help="Also serve the web dashboard (live sites and rounds, the run store) from this process.",
)  # fmt: skip
@click.option(
    "--dashboard-host", default="127.0.0.1", show_default=True,
    help="Dashboard address; anything but loopback needs --dashboard-token.",
)  # fmt: skip
@click.option("--dashboard-port", default=8765, show_default=True, help="Port; 0 picks one.")
@click.option(
    "--dashboard-token", envvar="FEDLOOM_DASHBOARD_TOKEN", default=None,
    help="Dashboard access token (or FEDLOOM_DASHBOARD_TOKEN), as for `fedloom dashboard`.",
)  # fmt: skip
@click.option("--verbose", "-v", is_flag=True, help="Log sessions and rounds.")
@user_errors
def server(
    file: Path,
    root: Path,
    listen: str,
    cert: Path | None,
    key: Path | None,
    allowlist: Path | None,
    insecure: bool,
    wait_for: int | None,
    deadline: float,
    heartbeat: float,
    hello_timeout: float,
    chunk_bytes: int,
    uploads: int,
    malloc_arenas: int,
    runs_dir: Path,
    resume: str | None,
    new: bool,
    with_dashboard: bool,
    dashboard_host: str,
    dashboard_port: int,
    dashboard_token: str | None,
    verbose: bool,
) -> None:
    """Coordinate a federation training the experiment FILE; sites join with `fedloom client`."""
    from fedloom.cli import STORE_FILE
    from fedloom.dashboard import DashboardConfig
    from fedloom.deploy import ServerOptions, serve, site_names
    from fedloom.experiment import load_experiment
    from fedloom.pki import Federation, Verifier
    from fedloom.store import RunStore
    from fedloom.transport import ServerCredentials

    _logging(verbose)
    check_malloc_arenas(malloc_arenas)
    dashboard_config = None
    if with_dashboard:
        try:
            dashboard_config = DashboardConfig(
                store=runs_dir / STORE_FILE, host=dashboard_host, port=dashboard_port,
                token=dashboard_token,
            )  # fmt: skip
        except ValueError as error:
            raise click.UsageError(f"--dashboard: {error}") from None
    experiment = load_experiment(file)
    fed = Federation(root)
    sites = site_names(allowlist or fed.allowlist)
    if insecure:
        _warn_insecure("the server")
        credentials, verifier = None, None
    else:
        verifier = Verifier(root)
        credentials = ServerCredentials(
            certificate=(cert or fed.cert(SERVER_CERT)).read_bytes(),
            key=(key or fed.key(SERVER_CERT)).read_bytes(),
            ca=fed.ca_cert.read_bytes(),
        )
    try:
        options = ServerOptions(
            address=listen,
            sites=sites,
            credentials=credentials,
            verifier=verifier,
            wait_for=wait_for,
            deadline=deadline,
            heartbeat=heartbeat,
            hello_timeout=hello_timeout,
            chunk_bytes=chunk_bytes,
            uploads=uploads,
            malloc_arenas=malloc_arenas or None,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None

    started: list[str] = []

    def listening(port: int, run_id: str) -> None:
        started.append(run_id)
        host = listen.rsplit(":", 1)[0]
        click.echo(
            f"listening on {host}:{port} for run {run_id} "
            f"({'insecure' if insecure else 'mutual TLS'}; {len(sites)} sites)"
        )
        sys.stdout.flush()

    def progress(record: object, state: object) -> None:
        from fedloom.engine import RoundRecord

        assert isinstance(record, RoundRecord)
        names = ", ".join(sites[c] for c in record.accepted)
        click.echo(
            f"round {record.round}: {len(record.accepted)}/{len(record.cohort)} "
            f"took part ({names}); {record.aborted or ''}".rstrip("; ")
        )
        sys.stdout.flush()

    tune_malloc(malloc_arenas, say=False)  # before the dashboard's thread (serve says it)
    runs_dir.mkdir(parents=True, exist_ok=True)
    try:
        with RunStore.open(runs_dir / STORE_FILE) as store, _dashboard(dashboard_config) as live:
            try:
                outcome = serve(
                    experiment,
                    store,
                    options,
                    resume=resume,
                    new=new,
                    on_round=progress,
                    on_listening=listening,
                    live=live,
                )
            except OSError as error:
                raise Refused(f"cannot serve on {listen}: {error}") from None
    except KeyboardInterrupt:
        if started:
            hint = (
                f"run {started[0]} can go on: `fedloom server {file} --resume {started[0]}` "
                "with the same options continues it, and its sites reconnect on their own"
            )
        else:
            hint = "no run had started"
        click.echo(f"\ninterrupted; {hint}", err=True)
        sys.exit(130)
    stopped = outcome.history.stopped
    if stopped.startswith("stopped on request"):
        click.echo(
            f"run {outcome.run_id} {stopped}; `fedloom server {file} --resume {outcome.run_id}` "
            "with the same options continues it"
        )
    else:
        click.echo(f"run {outcome.run_id} finished: {stopped}")


@contextmanager
def _dashboard(config: DashboardConfig | None) -> Iterator[FederationLive | None]:
    """The dashboard beside the server when ``config`` asks for it (see fedloom.deploy.live)."""
    if config is None:
        yield None
        return
    from fedloom.deploy import DashboardThread, FederationLive

    live = FederationLive()
    try:
        thread = DashboardThread(config, live)
    except OSError as error:
        raise Refused(
            f"cannot serve the dashboard on {config.host}:{config.port}: {error.strerror}"
        ) from None
    # Its errors still reach the log; its request lines would drown the sessions and rounds.
    logging.getLogger("fedloom.dashboard").setLevel(logging.WARNING)
    click.echo(f"dashboard on {thread.url} (live sites and rounds; runs in {config.store})")
    sys.stdout.flush()
    with thread:
        yield live


@click.command()
@click.option("--server", "target", required=True, metavar="HOST:PORT", help="The server.")
@click.option(
    "--identity",
    type=click.Path(dir_okay=False, path_type=Path),
    help="This site's certificate (from `fedloom ca issue SITE`).",
)
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), help="Its key.")
@click.option(
    "--ca",
    "ca_cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The federation's CA certificate (ca.pem).",
)
@click.option(
    "--data",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="This site's data: .npz with x_train, y_train[, x_test, y_test], or .csv with a header "
    "row, numeric feature columns and a label column (--label-column).",
)
@click.option(
    "--label-column",
    default="label",
    show_default=True,
    help="The label column of a .csv --data file; every other column is a feature.",
)
@click.option(
    "--label-kind",
    type=click.Choice(["class", "value"]),
    default="class",
    show_default=True,
    help="A .csv label: a class number (whole, >= 0) or a regression value.",
)
@click.option(
    "--model",
    "model_ref",
    required=True,
    metavar="package.module:function",
    help="A function returning this site's model (a fedloom Model or torch Module).",
)
@click.option("--insecure", is_flag=True, help="Connect without TLS (prints a warning).")
@click.option("--site", "site_name", help="Site name on an --insecure server.")
@click.option("--server-name", help="Name to expect in the server's certificate.")
@click.option("--give-up-after", type=float, help="Stop after this many seconds unjoined.")
@click.option("--backoff-max", default=30.0, show_default=True, help="Longest retry delay (s).")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="This site's own policy (TOML, the keys of a [[sites]] table but identity): a run "
    "asking for more is refused (exit status 3).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("fedloom-state"),
    show_default=True,
    help="Where this site keeps its client state (SCAFFOLD's control variate, error-feedback "
    "residuals) after every round, as SITE.state.npz, so a restarted site goes on from it.",
)
@click.option("--no-state", is_flag=True, help="Keep the client state in memory only.")
@malloc_option
@click.option("--verbose", "-v", is_flag=True, help="Log connections and tasks.")
@user_errors
def client(
    target: str,
    identity: Path | None,
    key: Path | None,
    ca_cert: Path | None,
    data: Path,
    label_column: str,
    label_kind: str,
    model_ref: str,
    insecure: bool,
    site_name: str | None,
    server_name: str | None,
    give_up_after: float | None,
    backoff_max: float,
    policy_file: Path | None,
    state_dir: Path,
    no_state: bool,
    malloc_arenas: int,
    verbose: bool,
) -> None:
    """Take part in a federation as one site, training on local data only."""
    from fedloom.deploy import SiteStateFile, load_model, load_site_data, site_program
    from fedloom.experiment.site_policy_file import load_site_policy
    from fedloom.pki import site_of
    from fedloom.transport import Backoff, PolicyRefused, Site, SiteCredentials, TrainingConfig

    _logging(verbose)
    check_malloc_arenas(malloc_arenas)
    if insecure:
        if site_name is None:
            raise click.UsageError("--insecure needs --site NAME (no certificate names the site)")
        _warn_insecure("this site")
        credentials = None
        name = site_name
    else:
        missing = [
            o for o, v in (("--identity", identity), ("--key", key), ("--ca", ca_cert)) if v is None
        ]
        if missing:
            raise click.UsageError(f"mutual TLS needs {', '.join(missing)} (or --insecure)")
        assert identity is not None and key is not None and ca_cert is not None
        pem, ca = identity.read_bytes(), ca_cert.read_bytes()
        name = site_of(pem, ca)  # refuses an expired or foreign certificate before connecting
        credentials = SiteCredentials(pem, key.read_bytes(), ca, server_name=server_name)
    policy = None if policy_file is None else load_site_policy(policy_file, name)
    local = load_site_data(data, label=label_column, label_kind=label_kind)
    layout = load_model(model_ref).layout

    kept = None if no_state else SiteStateFile(state_dir, name)

    def prepare(config: TrainingConfig) -> object:
        model = load_model(model_ref, loss=config.loss)
        return site_program(config, model, local, state=kept, run=site.run_id)

    tune_malloc(malloc_arenas)
    site = Site(
        target=target,
        name=name,
        layout=layout,
        prepare=prepare,  # type: ignore[arg-type]
        credentials=credentials,
        backoff=Backoff(maximum=backoff_max),
        give_up_after=give_up_after,
        policy=policy,
    )
    try:
        reason = site.run()
    except PolicyRefused as refused:
        raise PolicyRefusal(str(refused)) from None
    click.echo(f"{name}: {reason} ({site.tasks_done} tasks done)")
