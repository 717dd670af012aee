"""fedloom over the network: gRPC with mutual TLS, a versioned protobuf schema, chunked vectors.

The server side is :class:`GrpcExecutor`, the engine's executor interface answered by remote
sites; the site side is :class:`Site`. Protobuf types stay inside this package (an
import-linter contract forbids them elsewhere); the schema is ``proto/fedloom/v1`` and
``docs/protocol.md`` describes it for implementers in other languages.
"""

from __future__ import annotations

from fedloom.transport.codec import PROTOCOL_VERSION, ProtocolError
from fedloom.transport.config import PRIVACY_FEATURE, PrivacyOptions, StageOptions, TrainingConfig
from fedloom.transport.executor import GrpcExecutor, ServerCredentials
from fedloom.transport.server import (
    DEFAULT_CHUNK_BYTES,
    MAX_CHUNK_BYTES,
    ServiceConfig,
    SiteRefusal,
)
from fedloom.transport.site import (
    Backoff,
    PolicyRefused,
    Program,
    Site,
    SiteCredentials,
    SiteRefused,
)
from fedloom.transport.view import FederationView, RoundView, SessionView

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "MAX_CHUNK_BYTES",
    "PRIVACY_FEATURE",
    "PROTOCOL_VERSION",
    "Backoff",
    "FederationView",
    "GrpcExecutor",
    "PolicyRefused",
    "PrivacyOptions",
    "Program",
    "ProtocolError",
    "RoundView",
    "ServerCredentials",
    "ServiceConfig",
    "SessionView",
    "Site",
    "SiteCredentials",
    "SiteRefusal",
    "SiteRefused",
    "StageOptions",
    "TrainingConfig",
]
