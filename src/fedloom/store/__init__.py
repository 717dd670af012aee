"""The run store: every run's config, rounds, participants and latest checkpoint in a database.

SQLite by default, in one file with nothing to install (``runs/fedloom.db``, say); the SQL is
kept portable so a server deployment can later point the same statements at PostgreSQL (see
:mod:`fedloom.store.schema` for the tables and what would differ).

>>> with RunStore.open("runs/fedloom.db") as store:            # doctest: +SKIP
...     run_id = store.create_run(name="digits", config=text, seed=0, code_version=code_version())
...     store.record_round(run_id, record, checkpoint=Checkpoint(state, executor.states))
...     store.finish(run_id, status="completed", stopped=history.stopped)
"""

from __future__ import annotations

from fedloom.store.audit import AuditEntry, AuditProblem, AuditTrail, Verification
from fedloom.store.checkpoint import Checkpoint, decode_checkpoint, encode_checkpoint
from fedloom.store.control import StopRequest
from fedloom.store.errors import StoreError
from fedloom.store.runstore import FINAL_STATUSES, RunInfo, RunOwner, RunStore
from fedloom.store.schema import SCHEMA_VERSION
from fedloom.store.version import code_version

__all__ = [
    "FINAL_STATUSES",
    "SCHEMA_VERSION",
    "AuditEntry",
    "AuditProblem",
    "AuditTrail",
    "Checkpoint",
    "RunInfo",
    "RunOwner",
    "RunStore",
    "StopRequest",
    "StoreError",
    "Verification",
    "code_version",
    "decode_checkpoint",
    "encode_checkpoint",
]
