"""``python tls_refusals.py DIR [--install]``: a real TLS gRPC server (the transport's
``GrpcExecutor``) met by peers whose handshakes fail, each made with Python's ``ssl`` or a bare
socket (no gRPC client, whose own handshake lines would mix in). Prints, as JSON, each peer's
kind and local port, then exits; what gRPC logged is on standard error. With ``--install``,
:func:`fedloom.cli.grpc_log.install` runs first, as ``fedloom server`` does."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import ssl
import sys
import time
from pathlib import Path

if "--install" in sys.argv:
    import logging

    from fedloom.cli import grpc_log

    assert grpc_log.install()
    logging.basicConfig(format="%(name)s %(levelname)s %(message)s")

from fedloom.linear import LinearRegression
from fedloom.pki import Federation, Verifier, init_ca, issue
from fedloom.transport import (
    GrpcExecutor,
    ServerCredentials,
    ServiceConfig,
    TrainingConfig,
)


def tls_client(port: int, fed: Federation, name: str | None) -> int:
    """A TLS client speaking HTTP/2's ALPN, with ``name``'s certificate from ``fed`` (None:
    none); its local port."""
    context = ssl.create_default_context(cafile=fed.ca_cert)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    if name is not None:
        context.load_cert_chain(fed.cert(name), fed.key(name))
    with socket.create_connection(("127.0.0.1", port)) as raw:
        local = int(raw.getsockname()[1])
        with contextlib.suppress(OSError), context.wrap_socket(raw) as tls:
            tls.recv(1)
    return local


def main(work: Path) -> None:
    fed = init_ca(work / "fed")
    issue(fed.root, "server", server=True)
    issue(fed.root, "expired", days=1, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=9))
    other = init_ca(work / "other")
    issue(other.root, "stranger")
    config = ServiceConfig(
        run="refusals",
        layout=LinearRegression(3).layout,
        training=TrainingConfig("fedavg", {"lr": 0.1}),
        sites=("a",),
        verifier=Verifier(fed.root),
        hello_timeout=0.5,
    )
    credentials = ServerCredentials(
        fed.cert("server").read_bytes(), fed.key("server").read_bytes(), fed.ca_cert.read_bytes()
    )
    ports: dict[str, int] = {}
    with GrpcExecutor(config, address="127.0.0.1:0", credentials=credentials) as executor:
        port = executor.port
        ports["another CA"] = tls_client(port, other, "stranger")
        ports["expired"] = tls_client(port, fed, "expired")
        ports["no certificate"] = tls_client(port, fed, None)
        with socket.create_connection(("127.0.0.1", port)) as raw:
            ports["random bytes"] = raw.getsockname()[1]
            raw.sendall(bytes(range(256)) * 16)
            with contextlib.suppress(OSError):
                raw.recv(1)
        with socket.create_connection(("127.0.0.1", port)) as silent:
            ports["silent"] = silent.getsockname()[1]
            silent.settimeout(10)
            silent.recv(1)  # the server closes it after its hello timeout
        time.sleep(0.2)
    print(json.dumps(ports), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
