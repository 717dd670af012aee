from __future__ import annotations

import importlib.util

# These tests need the `deploy` extra (grpcio, protobuf, cryptography).
collect_ignore_glob = [] if importlib.util.find_spec("grpc") else ["test_*.py"]
