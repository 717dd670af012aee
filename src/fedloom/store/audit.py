"""The audit trail: an append-only, hash-chained log of what happened in a run.

Every entry records one event (a client joining, a round, a model's provenance, a policy
decision or refusal) as a ``kind`` and a JSON ``payload``. Its hash is

    SHA-256(previous entry's hash ‖ canonical JSON of {run, seq, kind, created, payload})

with 64 zeros before the first entry, so altering, removing or reordering any entry breaks
every link after it, and :meth:`AuditTrail.verify` names the first entry that does not check
out. The table is append-only in SQLite too: triggers refuse ``UPDATE`` and ``DELETE``.

What it cannot do alone: someone with write access to the file who drops the triggers and
recomputes every hash after their change produces a valid chain. Anchor it: publish the head
(:meth:`AuditTrail.head`, printed by ``fedloom audit verify``) somewhere they cannot write, and
verify against it with ``expected_head``.

Use it from any component (the runner, a gRPC server, a dashboard)::

    with RunStore.open("runs/fedloom.db") as store:
        trail = store.audit(run_id)
        trail.append("join", {"identity": "CN=hospital-a", "round": 0})
        result = trail.verify()
        if not result.ok:
            print(result.problem)          # "entry 7 (round): altered: …"

Identities are strings: in simulation ``"client-<id>"``; over gRPC, the certificate's subject.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedloom.store.connection import ensure_audit_table, transaction
from fedloom.store.errors import StoreError
from fedloom.store.schema import HAS_AUDIT

GENESIS = "0" * 64
"""The previous hash of a run's first entry."""

KINDS = (
    "run_started", "join", "round", "model", "policy", "refusal", "run_finished", "note",
    "control",
)  # fmt: skip
"""The kinds of entry fedloom writes; other components may add their own (any short name)."""

INSERT = """INSERT INTO audit (run_id, seq, kind, payload, created, prev_hash, hash)
    VALUES (?, ?, ?, ?, ?, ?, ?)"""
SELECT = """SELECT seq, kind, payload, created, prev_hash, hash FROM audit
    WHERE run_id = ? ORDER BY seq"""
LAST = "SELECT seq, hash FROM audit WHERE run_id = ? ORDER BY seq DESC LIMIT 1"


def canonical(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, no spaces, UTF-8, non-finite floats as
    strings (``"NaN"``, ``"Infinity"``) so every reader hashes the same bytes."""
    return json.dumps(_finite(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)  # fmt: skip


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def entry_hash(prev_hash: str, run_id: str, seq: int, kind: str, created: str, payload: Any) -> str:
    """The hash an entry must carry (see the module docstring)."""
    body = canonical(
        {"run": run_id, "seq": seq, "kind": kind, "created": created, "payload": payload}
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def digest(data: bytes | memoryview) -> str:
    """SHA-256 of ``data`` in hex: how models and updates are named in the trail."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    """One stored entry."""

    seq: int
    kind: str
    payload: dict[str, Any]
    created: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class AuditProblem:
    """The first entry that fails verification, and why."""

    seq: int
    kind: str
    reason: str

    def __str__(self) -> str:
        kind = f" ({self.kind})" if self.kind else ""
        return f"entry {self.seq}{kind}: {self.reason}"


@dataclass(frozen=True)
class Verification:
    """The outcome of :meth:`AuditTrail.verify`: how many entries checked out, the head hash,
    and the first problem (``None`` when the chain is intact)."""

    entries: int
    head: str
    problem: AuditProblem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


class AuditTrail:
    """One run's audit trail in a store; get one with ``RunStore.audit(run_id)``."""

    def __init__(self, connection: sqlite3.Connection, path: Path, run_id: str) -> None:
        self._conn = connection
        self._path = path
        self.run_id = run_id

    def append(self, kind: str, payload: Mapping[str, Any]) -> AuditEntry:
        """Add an entry after the current head, in one transaction; return it."""
        with transaction(self._conn, self._path) as conn:  # a refused payload writes nothing
            return append_in(conn, self.run_id, kind, payload)

    def entries(self) -> list[AuditEntry]:
        """Every entry in order of ``seq`` (as stored; :meth:`verify` says if they hold)."""
        try:
            if self._conn.execute(HAS_AUDIT).fetchone() is None:
                return []  # no run in this store has appended an entry yet
            rows = self._conn.execute(SELECT, (self.run_id,)).fetchall()
        except sqlite3.Error as error:
            raise StoreError(f"cannot read the audit trail in {self._path}: {error}") from None
        out = []
        for seq, kind, payload, created, prev, digest_ in rows:
            try:
                loaded = json.loads(payload)
            except (TypeError, ValueError):
                loaded = {"unreadable": str(payload)}
            out.append(
                AuditEntry(int(seq), str(kind), loaded, str(created), str(prev), str(digest_))
            )
        return out

    def head(self) -> tuple[int, str]:
        """``(entries, hash of the last one)``; ``(0, GENESIS)`` for an empty trail."""
        entries = self.entries()
        return (len(entries), entries[-1].hash) if entries else (0, GENESIS)

    def verify(
        self,
        *,
        expected_head: str | None = None,
        rounds: Sequence[int] = (),
        finished: bool = False,
    ) -> Verification:
        """Check every link of the chain; return the first entry that is wrong.

        Beyond the chain itself: ``expected_head`` (a hash published earlier) must be one of
        the entries, which catches entries removed from the end; every round in ``rounds`` (the
        run store's recorded rounds) must have a ``round`` entry; and a ``finished`` run's last
        entry must be ``run_finished``.
        """
        entries = self.entries()
        previous, count = GENESIS, 0
        for expected, entry in enumerate(entries):
            problem = _check(entry, expected, previous, self.run_id)
            if problem is not None:
                return Verification(count, previous, problem)
            previous, count = entry.hash, count + 1
        end = len(entries)
        last_kind = entries[-1].kind if entries else ""
        if expected_head is not None and expected_head not in {e.hash for e in entries}:
            reason = (
                f"removed: the published head {expected_head[:16]}… is not in the trail; entries "
                f"after entry {end - 1} are missing"
            )
            return Verification(count, previous, AuditProblem(end, "", reason))
        audited = {e.payload.get("round") for e in entries if e.kind == "round"}
        for round_ in rounds:
            if round_ not in audited:
                reason = f"removed: round {round_} is in the run store but has no audit entry"
                return Verification(count, previous, AuditProblem(end, "round", reason))
        if finished and last_kind != "run_finished":
            reason = "removed: the run finished but its trail does not end with run_finished"
            return Verification(count, previous, AuditProblem(end, "", reason))
        return Verification(count, previous, None)


def append_in(
    conn: sqlite3.Connection,
    run_id: str,
    kind: str,
    payload: Mapping[str, Any],
) -> AuditEntry:
    """Append an entry inside the caller's open write transaction on ``conn``.

    For a write that must be audited in the same transaction (a stop request, in
    :mod:`fedloom.store.control`): either both are stored or neither is.
    """
    text, stored = _checked(kind, payload)
    created = datetime.now(UTC).isoformat(timespec="microseconds")
    ensure_audit_table(conn)
    row = conn.execute(LAST, (run_id,)).fetchone()
    seq, prev = (0, GENESIS) if row is None else (int(row[0]) + 1, str(row[1]))
    digest_ = entry_hash(prev, run_id, seq, kind, created, stored)
    conn.execute(INSERT, (run_id, seq, kind, text, created, prev, digest_))
    return AuditEntry(seq, kind, stored, created, prev, digest_)


def _checked(kind: str, payload: Mapping[str, Any]) -> tuple[str, Any]:
    """The payload's canonical text and its stored form; refuses a bad kind or a payload JSON
    cannot hold, before anything is written."""
    if not isinstance(kind, str) or not kind or len(kind) > 40:
        raise ValueError(f"kind must be a short non-empty string, got {kind!r}")
    if not isinstance(payload, Mapping):
        raise TypeError(f"payload must be a mapping, got {type(payload).__name__}")
    text = canonical(payload)
    return text, json.loads(text)


def _check(entry: AuditEntry, expected: int, previous: str, run_id: str) -> AuditProblem | None:
    if entry.seq != expected:
        return AuditProblem(
            expected, "", f"removed: entry {expected} is missing (the next stored is {entry.seq})"
        )
    recomputed = entry_hash(entry.prev_hash, run_id, entry.seq, entry.kind, entry.created,
                            entry.payload)  # fmt: skip
    if recomputed != entry.hash:
        return AuditProblem(entry.seq, entry.kind, "altered: its contents do not match its hash")
    if entry.prev_hash != previous:
        return AuditProblem(
            entry.seq,
            entry.kind,
            f"out of chain: it does not follow entry {entry.seq - 1} (an earlier entry was "
            "altered, removed or reordered)",
        )
    return None
