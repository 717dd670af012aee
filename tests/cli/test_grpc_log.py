"""gRPC's handshake log, read: against a real TLS gRPC server (``tls_refusals.py``), each failed
handshake is one refusal naming its peer's port and the reason, however the log is cut into
pieces; the tracer's lines go, every other line passes through unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom.cli.grpc_log import GrpcLogFilter, Refusal, install, wanted

pytest.importorskip("grpc")

SCRIPT = Path(__file__).with_name("tls_refusals.py")
EXPECTED = {
    "another CA": "not signed by this federation's CA",
    "expired": "CERTIFICATE_VERIFY_FAILED: certificate has expired",
    "no certificate": "PEER_DID_NOT_RETURN_A_CERTIFICATE",
    "random bytes": "WRONG_VERSION_NUMBER",
    "silent": "no handshake within the server's hello timeout",
}


def _refusals(tmp: Path, *args: str, env: dict[str, str]) -> tuple[dict[str, int], str]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}, **env},
        check=True,
    )
    return json.loads(done.stdout), done.stderr


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, int], str]:
    """The peers' ports, and what gRPC wrote to standard error with its handshake tracer on."""
    tracer = {"GRPC_TRACE": "handshaker", "GRPC_VERBOSITY": "debug"}
    return _refusals(tmp_path_factory.mktemp("traced"), env=tracer)


def _read(text: str, cuts: list[int]) -> tuple[str, list[Refusal]]:
    gate = GrpcLogFilter()
    out, refusals = [], []
    for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
        passed, found = gate.feed(text[start:end])
        out.append(passed)
        refusals += found
    out.append(gate.flush())
    return "".join(out), refusals


def test_every_failed_handshake_names_its_peer_and_reason(
    traced: tuple[dict[str, int], str],
) -> None:
    ports, log = traced
    out, refusals = _read(log, [])
    assert len(refusals) == len(ports)
    by_peer = {r.peer: r.reason for r in refusals}
    for kind, port in ports.items():
        assert EXPECTED[kind] in by_peer[f"ipv4:127.0.0.1:{port}"], (kind, by_peer)
    assert "handshaker.cc" in log  # the tracer was on, and its lines are gone
    for traced_line in ("handshaker.cc", "channel_trace.h", "Handshake failed", "gRPC Tracers"):
        assert traced_line not in out


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_the_log_may_arrive_in_pieces_of_any_size(
    traced: tuple[dict[str, int], str], data: st.DataObject
) -> None:
    _, log = traced
    cuts = sorted(data.draw(st.lists(st.integers(0, len(log)), max_size=40)))
    assert _read(log, cuts) == _read(log, [])


LINES = st.lists(
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\n")), max_size=8
)


@settings(max_examples=200, deadline=None)
@given(before=LINES, after=LINES, cut=st.integers(0, 10_000))
def test_other_lines_pass_through_unchanged(
    traced: tuple[dict[str, int], str], before: list[str], after: list[str], cut: int
) -> None:
    # Lines that are not gRPC's (they lack its prefix), before gRPC's first line and after a
    # line of another gRPC source, come out exactly as they went in; gRPC's other lines too.
    _, log = traced
    own = "W1130 08:05:51.519156   11859 chttp2_transport.cc:1234] a line of its own\n"
    mine = "".join(f"{line}\n" for line in before)
    theirs = "".join(f"{line}\n" for line in after)
    text = mine + log + own + theirs
    out, _ = _read(text, [min(cut, len(text))])
    assert out.startswith(mine)
    assert out.endswith(own + theirs)


def test_install_reads_the_log_of_the_process_it_is_in(tmp_path: Path) -> None:
    # As `fedloom server` runs it: the warnings reach the real standard error, with the peers.
    ports, err = _refusals(tmp_path, "--install", env={})
    for kind, port in ports.items():
        line = f"fedloom.transport WARNING TLS handshake with ipv4:127.0.0.1:{port} failed: "
        assert line in err, (kind, err)
        assert EXPECTED[kind] in err.split(line, 1)[1].splitlines()[0]
    assert "CallNextHandshakerLocked" not in err


def test_install_leaves_a_process_alone_that_it_cannot_serve() -> None:
    # gRPC already imported (it read its settings then), the user's own gRPC settings, or no
    # standard error at all.
    check = (
        "import sys; {setup}; from fedloom.cli import grpc_log; "
        "sys.exit(0 if grpc_log.install() is False else 1)"
    )
    for setup, env in (
        ("import grpc", {}),
        ("pass", {"GRPC_VERBOSITY": "error"}),
        ("import os; os.close(2)", {}),  # no standard error to read from
    ):
        done = subprocess.run(
            [sys.executable, "-c", check.format(setup=setup)],
            env={**os.environ, **env},
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, setup
    assert "grpc" in sys.modules  # in this process too
    assert install() is False


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["server", "exp.toml"], True),
        (["relay", "--upstream", "h:1"], True),
        (["server", "exp.toml", "--insecure"], False),
        (["client", "--server", "h:1"], False),
        (["run", "exp.toml"], False),
        ([], False),
    ],
)
def test_only_commands_serving_tls_read_the_log(argv: list[str], expected: bool) -> None:
    assert wanted(argv) is expected
