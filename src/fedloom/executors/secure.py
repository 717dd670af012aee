"""The client side of secure aggregation inside an executor (see
:mod:`fedloom.engine.secure_clients`, where it lives so that the gRPC sites run the same code)."""

from __future__ import annotations

from fedloom.engine.secure_clients import SecureClients

__all__ = ["SecureClients"]
