"""What the gRPC server can tell an observer: its connected sites and the round in flight.

:meth:`fedloom.transport.GrpcExecutor.snapshot` builds a :class:`FederationView` on the
server's event loop (where the sessions live) and hands it to any thread as frozen values, so
an observer (the dashboard beside ``fedloom server``) never touches a session. Strings in it
come from sites (a certificate's subject, a site's claimed name on an insecure server, a peer
address) and are untrusted text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SessionView:
    """One connected site.

    ``site`` is its name in the population: its certificate's common name, or on an insecure
    server the name it claimed in its Hello (``subject`` and ``serial`` are then None).
    Times are Unix seconds; ``last_heard`` is when its last message (a heartbeat or anything
    else) arrived. ``tasks`` lists the kinds (``train``, ``evaluate``) of its pending tasks.
    """

    site: str
    subject: str | None
    serial: int | None
    peer: str
    connected_at: float
    last_heard: float | None
    tasks: tuple[str, ...]


@dataclass(frozen=True)
class RoundView:
    """The engine's current call: ``tasks`` handed to sites for round ``round`` (``phase``
    ``train`` or ``evaluate``), ``sent`` of them streamed out completely, ``replied`` answered
    and ``failed`` (not connected, disconnected, past the deadline, refused), since ``started``."""

    round: int
    phase: str
    tasks: int
    sent: int
    replied: int
    failed: int
    started: float


@dataclass(frozen=True)
class FederationView:
    """The server of run ``run``: its connected sites by name, and the round in flight (None
    between the engine's calls)."""

    run: str
    sites: tuple[SessionView, ...]
    round: RoundView | None


@dataclass
class RoundCounter:
    """The mutable counts behind a :class:`RoundView`, touched only on the server's loop."""

    round: int
    phase: str
    tasks: int
    started: float
    sent: int = 0
    replied: int = 0
    failed: int = 0

    def view(self) -> RoundView:
        return RoundView(
            self.round, self.phase, self.tasks, self.sent, self.replied, self.failed, self.started
        )
