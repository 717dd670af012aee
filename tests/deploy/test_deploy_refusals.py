"""Hostile or broken peers against a real TLS server on 127.0.0.1: each is refused with a
reason, and afterwards the server still trains its run with the one good site."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import grpc
import pytest
from deploy_helpers import (
    experiment_text,
    federation,
    finish,
    start_server,
    start_site,
    stop,
    write_site_data,
)

from fedloom.experiment import Experiment
from fedloom.linear import SoftmaxRegression
from fedloom.pki import Federation, init_ca, issue, revoke
from fedloom.store import RunStore
from fedloom.transport import Site, SiteCredentials, SiteRefused
from fedloom.transport.proto.v1 import fedloom_pb2 as pb

JOIN = "/fedloom.v1.Federation/Join"


def _run(
    tmp_path: Path,
    fed: Federation,
    name: str,
    data: Path,
    port: int,
    *args: str,
    cert: Path | None = None,
    ca: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    from deploy_helpers import environment

    command = [
        "fedloom",
        "client",
        "--server",
        f"127.0.0.1:{port}",
        "--identity",
        str(cert or fed.cert(name)),
        "--key",
        str(fed.key(name) if cert is None else cert.with_suffix(".key")),
        "--ca",
        str(ca or fed.ca_cert),
        "--data",
        str(data),
        "--model",
        "site_models:digits_softmax",
        "--backoff-max",
        "0.5",
        *args,
    ]
    import sys

    return subprocess.run(
        [sys.executable, "-m", *command],
        cwd=tmp_path,
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _direct_site(port: int, cert: Path, key: Path, ca: Path) -> Site:
    return Site(
        target=f"127.0.0.1:{port}",
        name="x",
        layout=SoftmaxRegression(features=64, classes=10).layout,
        prepare=lambda config: None,  # type: ignore[arg-type,return-value]
        credentials=SiteCredentials(cert.read_bytes(), key.read_bytes(), ca.read_bytes()),
        give_up_after=1.0,
    )


def _channel(port: int, fed: Federation, site: str) -> grpc.Channel:
    tls = grpc.ssl_channel_credentials(
        root_certificates=fed.ca_cert.read_bytes(),
        private_key=fed.key(site).read_bytes(),
        certificate_chain=fed.cert(site).read_bytes(),
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", tls)


def _join(channel: grpc.Channel) -> grpc.StreamStreamMultiCallable:
    return channel.stream_stream(
        JOIN,
        request_serializer=pb.SiteMessage.SerializeToString,
        response_deserializer=pb.ServerMessage.FromString,
    )


def test_refused_peers_leave_the_server_healthy(tmp_path: Path) -> None:
    text = experiment_text(clients=1, cohort=1, rounds=2)
    (tmp_path / "exp.toml").write_text(text)
    data = write_site_data(Experiment.from_toml(text), tmp_path / "data")[0]
    fed = federation(tmp_path / "fed", ["good", "revoked-site"])
    revoke(fed.root, "revoked-site")
    issue(fed.root, "stranger")
    fed.allowlist.write_text("good\nrevoked-site\n")  # the stranger is no longer allowed
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    issue(fed.root, "expired-site", days=1, not_before=past)
    other = init_ca(tmp_path / "other")
    issue(other.root, "good")
    (tmp_path / "population.txt").write_text("good\n")

    server = start_server(
        tmp_path,
        tmp_path / "exp.toml",
        fed,
        "--allowlist",
        str(tmp_path / "population.txt"),
        "--hello-timeout",
        "1",
    )
    good = None
    try:
        port = server.port
        revoked = _run(tmp_path, fed, "revoked-site", data, port)
        assert revoked.returncode == 2
        assert "certificate of 'revoked-site'" in revoked.stderr
        assert "is revoked" in revoked.stderr
        stranger = _run(tmp_path, fed, "stranger", data, port)
        assert stranger.returncode == 2
        assert "'stranger' is not on the federation's allow-list" in stranger.stderr
        # The command line refuses its own expired or foreign certificate before connecting ...
        expired = _run(tmp_path, fed, "expired-site", data, port)
        assert expired.returncode == 2
        assert "'expired-site' expired at" in expired.stderr
        foreign = _run(tmp_path, fed, "good", data, port, cert=other.cert("good"))
        assert foreign.returncode == 2
        assert "not signed by this federation's CA" in foreign.stderr
        # ... and the server's TLS handshake refuses them when a site skips that check.
        for cert, key in (
            (fed.cert("expired-site"), fed.key("expired-site")),
            (other.cert("good"), other.key("good")),
        ):
            with pytest.raises(SiteRefused, match="giving up"):
                _direct_site(port, cert, key, fed.ca_cert).run()
        plain = _run(
            tmp_path,
            fed,
            "good",
            data,
            port,
            "--insecure",
            "--site",
            "good",
            "--give-up-after",
            "1",
        )
        assert plain.returncode == 2
        assert "giving up" in plain.stderr
        assert "WITHOUT TLS" in plain.stderr

        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(os.urandom(4096))
            noise = raw.getsockname()[1]
        # TLS with no client certificate, and a connection that never starts its handshake
        # (the server gives it --hello-timeout).
        anonymous = ssl.create_default_context(cafile=fed.ca_cert)
        anonymous.set_alpn_protocols(["h2"])
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            anonymous.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            no_certificate = tls.getsockname()[1]
            with contextlib.suppress(OSError):
                tls.recv(1)
        with socket.create_connection(("127.0.0.1", port)) as silent:
            mute = silent.getsockname()[1]
            silent.settimeout(10)
            assert silent.recv(1) == b""  # the server closed it
        channel = _channel(port, fed, "good")
        oversized = pb.SiteMessage(hello=pb.Hello(protocol_version=1, site="g" * (3 << 20)))
        with pytest.raises(grpc.RpcError) as error:
            next(_join(channel)(iter([oversized])))
        assert error.value.code() in (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        release = threading.Event()

        def never() -> object:
            release.wait(30)
            yield from ()

        with pytest.raises(grpc.RpcError) as error:
            next(_join(channel)(never()))
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no Hello within 1 s" in (error.value.details() or "")
        release.set()
        channel.close()

        good = start_site(tmp_path, port, fed, "good", data)
        assert finish(server.process) == 0, server.output()
        assert finish(good) == 0
    finally:
        stop(server.process, *([good] if good else []))
    log = server.output()
    assert "is revoked" in log
    # gRPC refuses the handshakes; fedloom logs each with the peer (fedloom.cli.grpc_log)
    failed = "fedloom.transport WARNING TLS handshake with ipv4:127.0.0.1:"
    assert re.search(
        f"{failed}\\d+ failed: CERTIFICATE_VERIFY_FAILED: certificate has expired", log
    )
    assert re.search(
        f"{failed}\\d+ failed: CERTIFICATE_VERIFY_FAILED: unable to get local issuer "
        "certificate \\(not signed by this federation's CA\\)",
        log,
    )
    assert f"{failed}{noise} failed: WRONG_VERSION_NUMBER" in log
    assert "the peer does not speak TLS" in log
    assert f"{failed}{no_certificate} failed: PEER_DID_NOT_RETURN_A_CERTIFICATE" in log
    assert f"{failed}{mute} failed: UNAVAILABLE: Handshake read failed (Endpoint closing)" in log
    for traced in ("CallNextHandshakerLocked", "Handshake failed with error", "gRPC Tracers"):
        assert traced not in log
    assert "not on the federation's allow-list" in log
    assert "no Hello within 1 s" in log
    with RunStore.open(tmp_path / "runs" / "fedloom.db") as store:
        info = store.run(server.run_id)
        assert info.status == "completed"
        assert [r.accepted for r in store.rounds(info.id)] == [(0,), (0,)]
