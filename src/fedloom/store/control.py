"""Control requests: a stop asked of a running run, written by one process, honoured by another.

The runner recording a run checks for a stop request between rounds (see
:mod:`fedloom.runner`), so whoever can write the store (the dashboard, through its token-guarded
control action) can stop a run cleanly after its current round, with that round recorded and
checkpointed. The table is created by the first request, so stores that never had one are not
changed, and a fedloom that does not know it ignores it::

    control_requests(id INTEGER PRIMARY KEY, run_id → runs.id, action TEXT ('stop'),
                     requested TEXT (ISO 8601, UTC), origin TEXT)

``origin`` says who asked (the dashboard's peer address, say); it never holds a credential.

Every request is also a ``control`` entry in the run's audit trail (:mod:`fedloom.store.audit`),
written in the same transaction: a request that is not audited is not stored either. Its
payload is ``{"action": "stop", "origin": …, "requested": …}``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fedloom.store.audit import append_in
from fedloom.store.connection import transaction
from fedloom.store.errors import StoreError

_CREATE = """CREATE TABLE IF NOT EXISTS control_requests (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs (id),
    action TEXT NOT NULL CHECK (action IN ('stop')),
    requested TEXT NOT NULL,
    origin TEXT NOT NULL
)"""
_INSERT = "INSERT INTO control_requests (run_id, action, requested, origin) VALUES (?, ?, ?, ?)"
_PENDING = """SELECT id, run_id, action, requested, origin FROM control_requests
    WHERE run_id = ? AND action = 'stop' AND requested >= ? ORDER BY requested LIMIT 1"""
_RUN_STATUS = "SELECT status FROM runs WHERE id = ?"


@dataclass(frozen=True)
class StopRequest:
    """A request to stop run ``run_id`` after its current round."""

    id: int
    run_id: str
    requested: str
    origin: str


def request_stop(conn: sqlite3.Connection, path: Path, run_id: str, *, origin: str) -> StopRequest:
    """Record a request to stop ``run_id`` and its ``control`` audit entry, in one transaction;
    StoreError unless the run exists and is running."""
    if not isinstance(origin, str):
        raise TypeError(f"origin must be a str, got {type(origin).__name__}")
    requested = now_iso()
    with transaction(conn, path) as c:
        row = c.execute(_RUN_STATUS, (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id!r} in {path}")
        if row[0] != "running":
            raise StoreError(f"run {run_id} is {row[0]}, not running; there is nothing to stop")
        c.execute(_CREATE)
        cursor = c.execute(_INSERT, (run_id, "stop", requested, origin))
        request_id = cursor.lastrowid
        append_in(c, run_id, "control", {"action": "stop", "origin": origin,
                                         "requested": requested})  # fmt: skip
    assert request_id is not None
    return StopRequest(request_id, run_id, requested, origin)


def pending_stop(
    conn: sqlite3.Connection, path: Path, run_id: str, *, since: str
) -> StopRequest | None:
    """The first stop request for ``run_id`` made at or after ``since`` (ISO 8601, UTC), if any.

    Requests made before ``since`` (the moment a runner started or resumed the run) are stale:
    they belonged to an earlier attempt, which ended anyway.
    """
    try:
        row = conn.execute(_PENDING, (run_id, since)).fetchone()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return None
        raise StoreError(f"cannot read the store {path}: {error}") from None
    except sqlite3.Error as error:
        raise StoreError(f"cannot read the store {path}: {error}") from None
    if row is None:
        return None
    request_id, run, _, requested, origin = row
    return StopRequest(int(request_id), str(run), str(requested), str(origin))


def now_iso() -> str:
    """The current time as the store writes it: ISO 8601 in UTC, to the microsecond."""
    return datetime.now(UTC).isoformat(timespec="microseconds")
