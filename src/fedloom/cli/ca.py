"""``fedloom ca``: create a federation's certificate authority, issue and revoke certificates."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import ParamSpec, TypeVar

import click


class Refused(click.ClickException):
    """A deployment error a user can act on: one ``error:`` line, exit status 2."""

    exit_code = 2

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.message}", err=True)


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """``command`` with the deployment errors a user can cause (a refused certificate, a bad
    data file, a server that refuses this site) turned into one ``error:`` line, status 2."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as error:
            if isinstance(error, _user_error_types()):
                raise Refused(str(error)) from None
            raise

    return run


def _user_error_types() -> tuple[type[Exception], ...]:
    found: list[type[Exception]] = []
    with contextlib.suppress(ImportError):
        from fedloom.pki import PkiError

        found.append(PkiError)
    with contextlib.suppress(ImportError):
        from fedloom.deploy import SiteError
        from fedloom.transport import ProtocolError, SiteRefused

        found += [SiteError, SiteRefused, ProtocolError]
    return tuple(found)


def pki() -> ModuleType:
    """:mod:`fedloom.pki`, imported on use: it needs the ``deploy`` extra (cryptography)."""
    try:
        import fedloom.pki
    except ImportError as error:
        raise Refused(f"{error}: pip install 'fedloom[deploy]'") from None
    return fedloom.pki


P = ParamSpec("P")
R = TypeVar("R")

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
@user_errors
def init_command(root: Path, days: int) -> None:
    """Create a new federation CA in the directory ROOT."""
    fed = pki().init_ca(root, days=days)
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
@user_errors
def issue_command(name: str, root: Path, days: int, server: bool, hosts: tuple[str, ...]) -> None:
    """Issue a certificate and key for the site (or, with --server, the server) NAME."""
    if hosts and not server:
        raise click.UsageError("--host applies to server certificates; add --server")
    cert, key = pki().issue(root, name, days=days, server=server, hosts=hosts)
    role = "server" if server else "site"
    click.echo(f"issued {role} {name}: certificate {cert}, key {key}")
    if not server:
        click.echo(f"{name} is on the allow-list {pki().Federation(root).allowlist}")


@ca.command(name="revoke")
@click.argument("name")
@ca_dir_option
@user_errors
def revoke_command(name: str, root: Path) -> None:
    """Revoke the current certificate of site NAME."""
    serial = pki().revoke(root, name)
    click.echo(f"revoked {name}'s certificate (serial {serial:x}) in {pki().Federation(root).crl}")
