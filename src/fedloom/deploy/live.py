"""The dashboard beside ``fedloom server``: the live federation, and a thread that cannot hurt it.

:class:`FederationLive` answers the dashboard's :class:`~fedloom.dashboard.LiveState` from the
gRPC server's own session registry (:meth:`fedloom.transport.GrpcExecutor.snapshot`): the
connected sites with the identity their certificates proved, when each was last heard from, and
the round in flight (tasks handed out and streamed, replies, failures). The transport sits below
the dashboard in the layers and knows nothing of it; this module, above both, adapts one to the
other.

:class:`DashboardThread` serves the dashboard from a daemon thread of the server's process. The
federation never waits on it: a request that fails is answered 500 and logged, the thread
ending for any reason is logged and training goes on, reading the live state never blocks the
gRPC loop for longer than building a snapshot, and stopping it is bounded. The dashboard reads
the store read-only, one request at a time, so it holds no lock the server could wait for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from fedloom.dashboard import DashboardConfig, DashboardServer, RoundProgress, SiteStatus
from fedloom.dashboard import make_server as make_dashboard
from fedloom.transport import FederationView, GrpcExecutor, SessionView

log = logging.getLogger("fedloom.server")


class FederationLive:
    """A :class:`~fedloom.dashboard.LiveState` over the gRPC server of a running deployment.

    :func:`fedloom.deploy.serve` attaches its executor once it listens and detaches it before
    closing it; meanwhile (before, after) there are no sites and no round. ``timeout`` bounds
    each read of the server's state.
    """

    def __init__(self, *, timeout: float = 2.0) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.timeout = timeout
        self._lock = threading.Lock()
        self._executor: GrpcExecutor | None = None

    def attach(self, executor: GrpcExecutor) -> None:
        with self._lock:
            self._executor = executor

    def detach(self) -> None:
        with self._lock:
            self._executor = None

    def sites(self) -> Sequence[SiteStatus]:
        view = self._view()
        if view is None:
            return []
        return sorted((site_status(s) for s in view.sites), key=lambda s: s.site_id)

    def progress(self) -> RoundProgress | None:
        view = self._view()
        if view is None or view.round is None:
            return None
        r = view.round
        return RoundProgress(
            run_id=view.run, round=r.round, expected=r.tasks, received=r.replied,
            started=r.started, phase=r.phase, sent=r.sent, failed=r.failed,
        )  # fmt: skip

    def _view(self) -> FederationView | None:
        with self._lock:
            executor = self._executor
        return None if executor is None else executor.snapshot(self.timeout)


def site_status(view: SessionView) -> SiteStatus:
    """One session as the dashboard shows it: the certificate's subject as the identity, or on an
    insecure server the name the site claimed, marked unverified."""
    identity = view.subject if view.subject is not None else f"{view.site} (unverified: insecure)"
    state = (
        "training" if "train" in view.tasks
        else "evaluating" if "evaluate" in view.tasks
        else "idle"
    )  # fmt: skip
    return SiteStatus(
        site_id=view.site, identity=identity, address=view.peer,
        connected_since=view.connected_at, last_heartbeat=view.last_heard, state=state,
    )  # fmt: skip


class DashboardThread:
    """The dashboard for ``config`` served from a daemon thread; see the module docstring.

    The port is bound when this is made, so a port in use is an :class:`OSError` before the
    federation starts. Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, config: DashboardConfig, live: FederationLive) -> None:
        self.server: DashboardServer = make_dashboard(config, live=live)
        self.url = self.server.url
        self._thread = threading.Thread(target=self._serve, name="fedloom-dashboard", daemon=True)

    def __enter__(self) -> DashboardThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> DashboardThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving; waits at most ``timeout`` seconds, then leaves the daemon thread."""
        if self._thread.is_alive():
            stopper = threading.Thread(target=self.server.shutdown, daemon=True)
            stopper.start()
            stopper.join(timeout)
            self._thread.join(timeout)
        self.server.server_close()

    def _serve(self) -> None:
        try:
            self.server.serve_forever()
        except Exception:
            log.exception("the dashboard stopped serving; the federation goes on without it")
