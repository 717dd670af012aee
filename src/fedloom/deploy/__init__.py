"""Real deployments: ``fedloom server`` and ``fedloom client`` as Python functions.

:func:`serve` trains an experiment with the sites that join over gRPC (:func:`serve_algorithm`,
which is ``fedloom.serve``, an algorithm value from Python); :func:`join` takes part
as one site with its own data and model; :class:`FederationLive` and :class:`DashboardThread`
serve the dashboard beside a server. See ``docs/deployment.md``.
"""

from __future__ import annotations

from fedloom.deploy.algorithm_server import describe, serve_algorithm
from fedloom.deploy.live import DashboardThread, FederationLive
from fedloom.deploy.relay import RELAY_ALGORITHMS, RelayOptions, RelayProgram, relay
from fedloom.deploy.server import Plan, ServerOptions, serve, serve_plan, site_names
from fedloom.deploy.site import (
    KeptState,
    SiteData,
    SiteError,
    load_model,
    load_site_data,
    site_program,
)
from fedloom.deploy.site_state import SavedState, SiteStateFile, fingerprint
from fedloom.deploy.training import client_program, training_config

__all__ = [
    "RELAY_ALGORITHMS",
    "DashboardThread",
    "FederationLive",
    "KeptState",
    "Plan",
    "RelayOptions",
    "RelayProgram",
    "SavedState",
    "ServerOptions",
    "SiteData",
    "SiteError",
    "SiteStateFile",
    "client_program",
    "describe",
    "fingerprint",
    "load_model",
    "load_site_data",
    "relay",
    "serve",
    "serve_algorithm",
    "serve_plan",
    "site_names",
    "site_program",
    "training_config",
]
