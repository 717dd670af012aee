"""Live federation state for the dashboard: connected sites, heartbeats, the current round.

The dashboard reads it through :class:`LiveState`, two methods a deployment's server answers.
The gRPC server (which sits below the dashboard in the layers and so cannot import it) exposes
its own view; the command that starts a server with a dashboard adapts that view to this
protocol. :class:`InProcessLiveState` is a complete, thread-safe implementation for a server that
runs in the same process, and for tests.

Strings here come from sites (a certificate's subject, a reported state): the dashboard treats
them as untrusted text and never as markup.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

PHASES = ("train", "evaluate")


@dataclass(frozen=True)
class SiteStatus:
    """One connected site.

    ``site_id`` is stable across reconnections (a certificate fingerprint, say); ``identity`` is
    who the site's certificate says it is (its subject); times are Unix seconds.
    """

    site_id: str
    identity: str
    address: str
    connected_since: float
    last_heartbeat: float | None = None
    state: str = "connected"

    def __post_init__(self) -> None:
        for name in ("site_id", "identity", "address", "state"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
        if not self.site_id:
            raise ValueError("site_id must be a non-empty str, got ''")
        _check_time("connected_since", self.connected_since)
        if self.last_heartbeat is not None:
            _check_time("last_heartbeat", self.last_heartbeat)


@dataclass(frozen=True)
class RoundProgress:
    """The round in flight: ``received`` of ``expected`` updates are in, since ``started``.

    A deployed server also says which ``phase`` of the round it is in (``train``, or
    ``evaluate`` for federated evaluation), how many of its tasks were ``sent`` to their sites
    completely (None when not tracked) and how many ``failed`` (the site was not connected,
    left, missed the deadline or refused the task).
    """

    run_id: str | None
    round: int
    expected: int
    received: int
    started: float
    phase: str = "train"
    sent: int | None = None
    failed: int = 0

    def __post_init__(self) -> None:
        for name in ("round", "expected", "received", "failed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.received + self.failed > self.expected:
            also = f" plus {self.failed} failed" if self.failed else ""
            raise ValueError(
                f"received must be at most expected ({self.expected}), got {self.received}{also}"
            )
        sent = self.sent
        if sent is not None and (
            isinstance(sent, bool) or not isinstance(sent, int) or not 0 <= sent <= self.expected
        ):
            raise ValueError(
                f"sent must be None or an integer in [0, {self.expected}], got {sent!r}"
            )
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {list(PHASES)}, got {self.phase!r}")
        _check_time("started", self.started)


@runtime_checkable
class LiveState(Protocol):
    """What a running server tells the dashboard; both methods must be safe to call from any
    thread at any time, and cheap (the page polls them)."""

    def sites(self) -> Sequence[SiteStatus]:
        """The sites connected now."""
        ...

    def progress(self) -> RoundProgress | None:
        """The round in flight, or ``None`` between rounds."""
        ...


class InProcessLiveState:
    """A :class:`LiveState` that a server in this process updates as sites come and go."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sites: dict[str, SiteStatus] = {}
        self._progress: RoundProgress | None = None

    def sites(self) -> Sequence[SiteStatus]:
        with self._lock:
            return sorted(self._sites.values(), key=lambda s: (s.identity, s.site_id))

    def progress(self) -> RoundProgress | None:
        with self._lock:
            return self._progress

    def connect(self, site: SiteStatus) -> None:
        """Add ``site``, or replace the entry with its ``site_id`` when it reconnects."""
        with self._lock:
            self._sites[site.site_id] = site

    def heartbeat(self, site_id: str, *, at: float | None = None, state: str | None = None) -> None:
        """Note a heartbeat from ``site_id`` (now, unless ``at``); KeyError if not connected."""
        with self._lock:
            site = self._require(site_id)
            moment = time.time() if at is None else at
            self._sites[site_id] = replace(
                site, last_heartbeat=moment, state=site.state if state is None else state
            )

    def disconnect(self, site_id: str) -> None:
        """Remove ``site_id``; KeyError if it is not connected."""
        with self._lock:
            self._require(site_id)
            del self._sites[site_id]

    def start_round(
        self, round: int, *, expected: int, run_id: str | None = None, at: float | None = None
    ) -> None:
        """A round begins, waiting for ``expected`` updates."""
        started = time.time() if at is None else at
        with self._lock:
            self._progress = RoundProgress(run_id, round, expected, 0, started)

    def update_received(self) -> None:
        """One more update arrived for the round in flight; ValueError if none is."""
        with self._lock:
            if self._progress is None:
                raise ValueError("no round is in flight; call start_round first")
            self._progress = replace(self._progress, received=self._progress.received + 1)

    def end_round(self) -> None:
        """The round in flight is over."""
        with self._lock:
            self._progress = None

    def _require(self, site_id: str) -> SiteStatus:
        try:
            return self._sites[site_id]
        except KeyError:
            known = ", ".join(sorted(self._sites)) or "none"
            raise KeyError(f"site {site_id!r} is not connected; connected: {known}") from None


def _check_time(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of Unix seconds, got {value!r}")
