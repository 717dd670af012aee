"""gRPC's own log, read by the server: a refused TLS handshake becomes a fedloom warning naming
the peer and the reason.

gRPC's C core refuses a bad handshake (a certificate from another CA or an expired one, a
plain-text client, random bytes, a client silent past the handshake's deadline) before any
Python code sees the connection, and its default log line gives the reason without the peer.
With its handshake tracer on, it logs both. ``fedloom server`` and ``fedloom relay``, run as
commands, therefore start gRPC with the tracer on (``GRPC_TRACE=handshaker``,
``GRPC_VERBOSITY=debug``, set before gRPC is imported: it reads them once) and read what gRPC
writes to the process's standard error. That descriptor becomes a pipe read by a thread: each
refused handshake becomes one warning on the ``fedloom.transport`` logger, ``TLS handshake with
ipv4:10.0.0.7:52344 failed: CERTIFICATE_VERIFY_FAILED: certificate has expired``; the tracer's
other lines (several for every connection) and gRPC's own line on the refusal are dropped;
everything else goes on to the real standard error as it came. Python's own output
(``sys.stderr``, and :mod:`faulthandler`'s) is pointed at the real standard error directly, so
nothing Python writes waits on the thread.

Nothing happens where the user set ``GRPC_TRACE`` or ``GRPC_VERBOSITY`` (theirs stand), where
gRPC is already imported (too late), or off POSIX. The log's format is gRPC's, not an interface:
:class:`GrpcLogFilter` passes through whatever it does not recognise, so a gRPC that words its
lines differently loses the warnings (tests/cli/test_grpc_log.py then fails), never a line.
"""

from __future__ import annotations

import atexit
import faulthandler
import logging
import os
import queue
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger("fedloom.transport")

SERVING = frozenset({"server", "relay"})
"""The commands that run a gRPC server."""

_PREFIX = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ (?P<file>[\w.+-]+):\d+\] (?P<text>.*)")
_TRACER_FILES = frozenset({"handshaker.cc", "channel_trace.h"})
_OURS = (  # gRPC's lines that the warnings or these settings make redundant
    ("log.cc", "Log level DEBUG is not suitable"),  # at its start, on GRPC_VERBOSITY=debug
    ("trace.cc", "gRPC Tracers:"),  # at its start, on GRPC_TRACE
    ("ssl_transport_security.cc", "Handshake failed"),  # the warning says it, with the peer
)
_HINTS = (
    ("unable to get local issuer certificate", "not signed by this federation's CA"),
    ("self signed certificate in certificate chain", "not signed by this federation's CA"),
    ("WRONG_VERSION_NUMBER", "the peer does not speak TLS: a plain-text client, or not a client"),
    ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "the client presented no certificate"),
    ("(Socket closed)", "the peer closed the connection before the handshake ended"),
    ("(Endpoint closing)", "no handshake within the server's hello timeout, or it is stopping"),
)
_PEER = re.compile(r"grpc\.internal\.endpoint_peer_address=(?P<peer>[^,}\s]+)")
_FAILED = re.compile(r"CallNextHandshakerLocked: error=(?P<error>.*)")
_OPENSSL = re.compile(r"OPENSSL_internal:(?P<reason>.*)")


@dataclass(frozen=True)
class Refusal:
    """A TLS handshake that failed: the peer, and gRPC's reason. On a server, a refused client;
    in a relay, whose upstream channel runs in the same process, also its own failed attempts
    to reach the central server (which it logs as well)."""

    peer: str
    reason: str

    def __str__(self) -> str:
        return f"TLS handshake with {self.peer} failed: {self.reason}"


@dataclass
class GrpcLogFilter:
    """Reads gRPC's log as it is written, in pieces of any size: :meth:`feed` returns the text
    to pass on and the handshakes refused.

    A record is a line with gRPC's prefix (``I1130 08:05:51.519156   11859 handshaker.cc:155]
    ...``) and the lines after it without one. Records of the handshake tracer are dropped, as
    is gRPC's own ``Handshake failed`` line (the warning replaces it); a tracer record that
    reports a handshake ending in an error and names its peer is a :class:`Refusal`. The
    rest passes through unchanged, line for line."""

    _partial: str = ""
    _dropping: bool = False
    _error: str | None = None
    _reported: bool = False
    _out: list[str] = field(default_factory=list)

    def feed(self, text: str) -> tuple[str, list[Refusal]]:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        refusals = [r for line in lines if (r := self._line(line + "\n")) is not None]
        out, self._out = "".join(self._out), []
        return out, refusals

    def flush(self) -> str:
        """What is left of an unfinished last line, passed on as it is."""
        rest, self._partial = self._partial, ""
        if rest and not self._dropping:
            return rest
        return ""

    def _line(self, line: str) -> Refusal | None:
        start = _PREFIX.match(line)
        if start is not None:
            name, text = start["file"], start["text"]
            ours = any(name == file and text.startswith(words) for file, words in _OURS)
            self._dropping = name in _TRACER_FILES or ours
            failed = _FAILED.match(text) if name == "handshaker.cc" else None
            self._error = failed["error"] if failed and failed["error"][:2] != "OK" else None
            self._reported = False
        if not self._dropping:
            self._out.append(line)
            return None
        peer = _PEER.search(line)
        if self._error is None or self._reported or peer is None:
            return None
        self._reported = True
        return Refusal(peer["peer"], _reason(self._error))


def _reason(error: str) -> str:
    error = error.strip().removesuffix(": OK").strip()
    openssl = _OPENSSL.search(error)
    reason = (openssl["reason"] if openssl else error).strip()[:300]
    hints = [hint for words, hint in _HINTS if words in reason]
    return f"{reason} ({hints[0]})" if hints else reason


def wanted(argv: Sequence[str]) -> bool:
    """Whether the command line ``argv`` (without the program) serves gRPC over TLS."""
    return bool(argv) and argv[0] in SERVING and "--insecure" not in argv


def install() -> bool:
    """Turn gRPC's handshake tracer on and read its log (the module's docstring); False, doing
    nothing, where that cannot or should not be done."""
    if os.name != "posix" or "grpc" in sys.modules:
        return False
    if "GRPC_TRACE" in os.environ or "GRPC_VERBOSITY" in os.environ:
        return False
    try:
        real = os.dup(2)
    except OSError:  # no standard error at all: nothing to read gRPC's log from
        return False
    os.environ["GRPC_TRACE"] = "handshaker"
    os.environ["GRPC_VERBOSITY"] = "debug"
    sys.stderr.flush()
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    sys.stderr = os.fdopen(os.dup(real), "w", buffering=1, errors="backslashreplace")
    if faulthandler.is_enabled():
        faulthandler.enable(sys.stderr)
    reader = _Reader(read, real)
    reader.start()
    atexit.register(reader.stop)
    return True


class _Reader:
    """The pipe's reader and the warnings' emitter: two threads, so that a warning whose handler
    still writes to descriptor 2 (one made before :func:`install`) never waits on the very
    thread that drains the pipe."""

    def __init__(self, read: int, real: int) -> None:
        self._read = read
        self._real = real
        self._refusals: queue.SimpleQueue[Refusal | None] = queue.SimpleQueue()
        self._threads = (
            threading.Thread(target=self._drain, name="fedloom-grpc-log", daemon=True),
            threading.Thread(target=self._emit, name="fedloom-grpc-log-warn", daemon=True),
        )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """At exit: give descriptor 2 back to the real standard error (the pipe then ends) and
        let the threads pass on what is left."""
        os.dup2(self._real, 2)
        for thread in self._threads:
            thread.join(timeout=2)

    def _drain(self) -> None:
        gate = GrpcLogFilter()
        try:
            while chunk := os.read(self._read, 1 << 16):
                out, refusals = gate.feed(chunk.decode("utf-8", "backslashreplace"))
                self._pass(out)
                for refusal in refusals:
                    self._refusals.put(refusal)
            self._pass(gate.flush())
        except Exception:  # never leave gRPC writing into a pipe nobody reads
            os.dup2(self._real, 2)
            self._pass(gate.flush())
        finally:
            self._refusals.put(None)

    def _emit(self) -> None:
        while (refusal := self._refusals.get()) is not None:
            log.warning("%s", refusal)

    def _pass(self, text: str) -> None:
        data = text.encode("utf-8", "backslashreplace")
        while data:
            try:
                data = data[os.write(self._real, data) :]
            except OSError:  # the real standard error is gone: drop, keep draining
                return
