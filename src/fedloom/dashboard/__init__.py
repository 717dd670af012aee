"""A live web dashboard over the run store and a running federation.

``fedloom dashboard`` serves it on 127.0.0.1; the page is built only on a documented, read-only
JSON API (``docs/dashboard.md``): runs and their status, one run's accuracy and loss per round
(updating while it runs), who took part, dropped out or straggled, bytes moved, privacy spent
against the budget, secure aggregation, several runs on one chart, and for a live federation
its connected sites and the round in flight, and each run's audit trail with its verification
result. Its only write is a token-guarded control action (stop a running run), recorded
through :func:`record_control_action` together with its entry in the run's audit trail.

>>> from fedloom.dashboard import DashboardConfig, make_server      # doctest: +SKIP
>>> make_server(DashboardConfig(store=Path("runs/fedloom.db"))).serve_forever()
"""

from __future__ import annotations

from fedloom.dashboard.api import Api, BadRequest
from fedloom.dashboard.control import record_control_action
from fedloom.dashboard.live import InProcessLiveState, LiveState, RoundProgress, SiteStatus
from fedloom.dashboard.server import DashboardConfig, DashboardServer, make_server, running

__all__ = [
    "Api",
    "BadRequest",
    "DashboardConfig",
    "DashboardServer",
    "InProcessLiveState",
    "LiveState",
    "RoundProgress",
    "SiteStatus",
    "make_server",
    "record_control_action",
    "running",
]
