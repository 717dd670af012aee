"""``fedloom ca``: create a federation's certificate authority, issue and revoke certificates."""

from __future__ import annotations

from pathlib import Path

import click

from fedloom.pki import Federation, init_ca, issue, revoke

ca_dir_option = click.option(
    "--dir", "root", type=click.Path(file_okay=False, path_type=Path), default=Path("federation"),
    envvar="FEDLOOM_CA", show_default=True, help="The federation directory.",
)  # fmt: skip


@click.group(name="ca")
def ca() -> None:
    """The federation's certificate authority (mutual TLS for `fedloom server` and `client`)."""


@ca.command(name="init")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--days", default=3650, show_default=True, help="Validity of the CA certificate.")
def init_command(root: Path, days: int) -> None:
    """Create a new federation CA in the directory ROOT."""
    fed = init_ca(root, days=days)
    click.echo(f"created the federation CA {fed.ca_cert}; keep {fed.ca_key} private")


@ca.command(name="issue")
@click.argument("name")
@ca_dir_option
@click.option("--days", default=365, show_default=True, help="Validity of the certificate.")
@click.option("--server", is_flag=True, help="A server certificate (not a site).")
@click.option(
    "--host", "hosts", multiple=True, metavar="HOST",
    help="Host name or IP the server is reached at (repeatable; default localhost, 127.0.0.1).",
)  # fmt: skip
def issue_command(name: str, root: Path, days: int, server: bool, hosts: tuple[str, ...]) -> None:
    """Issue a certificate and key for the site (or, with --server, the server) NAME."""
    if hosts and not server:
        raise click.UsageError("--host applies to server certificates; add --server")
    cert, key = issue(root, name, days=days, server=server, hosts=hosts)
    role = "server" if server else "site"
    click.echo(f"issued {role} {name}: certificate {cert}, key {key}")
    if not server:
        click.echo(f"{name} is on the allow-list {Federation(root).allowlist}")


@ca.command(name="revoke")
@click.argument("name")
@ca_dir_option
def revoke_command(name: str, root: Path) -> None:
    """Revoke the current certificate of site NAME."""
    serial = revoke(root, name)
    click.echo(f"revoked {name}'s certificate (serial {serial:x}) in {Federation(root).crl}")
