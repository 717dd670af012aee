"""``fedloom relay``: a region's server and one site of the central server (two levels)."""

from __future__ import annotations

from pathlib import Path

import click

from fedloom.cli.ca import ca_dir_option, user_errors
from fedloom.cli.deploy import (
    SERVER_CERT,
    _logging,
    _warn_insecure,
    check_malloc_arenas,
    malloc_option,
    tune_malloc,
)


@click.command()
@click.option("--server", "target", required=True, metavar="HOST:PORT", help="Central server.")
@click.option(
    "--identity",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The relay's site certificate for the central server.",
)
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), help="Its key.")
@click.option(
    "--ca",
    "ca_cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The central federation's CA certificate.",
)
@click.option(
    "--model",
    "model_ref",
    required=True,
    metavar="package.module:function",
    help="A function returning the run's model (for its layout).",
)
@ca_dir_option
@click.option(
    "--listen",
    default="0.0.0.0:50052",
    show_default=True,
    help="HOST:PORT the region's sites connect to.",
)
@click.option(
    "--serve-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Certificate for the region (default DIR/sites/server.pem).",
)
@click.option(
    "--serve-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Its key (default DIR/sites/server.key).",
)
@click.option(
    "--allowlist",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The region's sites (default DIR/allowlist.txt).",
)
@click.option("--insecure", is_flag=True, help="No TLS on either side (prints a warning).")
@click.option("--site", "site_name", help="The relay's name on an --insecure central server.")
@click.option("--wait", "wait_for", type=int, help="Region sites to wait for (all).")
@click.option("--deadline", default=60.0, show_default=True, help="Seconds a task waits.")
@click.option("--give-up-after", type=float, help="Stop after this many seconds unjoined.")
@malloc_option
@click.option("--verbose", "-v", is_flag=True, help="Log connections and rounds.")
@user_errors
def relay(
    target: str,
    identity: Path | None,
    key: Path | None,
    ca_cert: Path | None,
    model_ref: str,
    root: Path,
    listen: str,
    serve_cert: Path | None,
    serve_key: Path | None,
    allowlist: Path | None,
    insecure: bool,
    site_name: str | None,
    wait_for: int | None,
    deadline: float,
    give_up_after: float | None,
    malloc_arenas: int,
    verbose: bool,
) -> None:
    """Serve a region's sites and take part in the central federation as one site."""
    from fedloom.deploy import RelayOptions, load_model, site_names
    from fedloom.deploy import relay as run_relay
    from fedloom.pki import Federation, Verifier, site_of
    from fedloom.transport import ServerCredentials, SiteCredentials

    _logging(verbose)
    check_malloc_arenas(malloc_arenas)
    fed = Federation(root)
    sites = site_names(allowlist or fed.allowlist)
    if insecure:
        if site_name is None:
            raise click.UsageError("--insecure needs --site NAME for the central server")
        _warn_insecure("the relay")
        up, down, verifier, name = None, None, None, site_name
    else:
        missing = [
            o for o, v in (("--identity", identity), ("--key", key), ("--ca", ca_cert)) if v is None
        ]
        if missing:
            raise click.UsageError(f"mutual TLS needs {', '.join(missing)} (or --insecure)")
        assert identity is not None and key is not None and ca_cert is not None
        pem, ca = identity.read_bytes(), ca_cert.read_bytes()
        name = site_of(pem, ca)
        up = SiteCredentials(pem, key.read_bytes(), ca)
        down = ServerCredentials(
            certificate=(serve_cert or fed.cert(SERVER_CERT)).read_bytes(),
            key=(serve_key or fed.key(SERVER_CERT)).read_bytes(),
            ca=fed.ca_cert.read_bytes(),
        )
        verifier = Verifier(root)
    layout = load_model(model_ref).layout
    tune_malloc(malloc_arenas)
    options = RelayOptions(
        address=listen,
        sites=sites,
        credentials=down,
        verifier=verifier,
        wait_for=wait_for,
        deadline=deadline,
    )
    reason = run_relay(
        upstream=target,
        name=name,
        layout=layout,
        upstream_credentials=up,
        options=options,
        give_up_after=give_up_after,
    )
    click.echo(f"relay {name}: {reason}")
