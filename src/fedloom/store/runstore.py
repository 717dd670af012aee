"""The run store: runs, their rounds, participants and latest checkpoint, in one database file.

Several processes may write one store at once (see :mod:`fedloom.store.connection`); each
write is one short transaction, so a crash leaves every round either fully recorded or absent.
A :class:`RunStore` holds one connection: use it from one thread.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from fedloom.engine.history import Rejection, RoundRecord
from fedloom.store import schema
from fedloom.store.audit import AuditTrail
from fedloom.store.checkpoint import Checkpoint, decode_checkpoint, encode_checkpoint
from fedloom.store.connection import connect, connect_read_only, transaction
from fedloom.store.control import StopRequest, pending_stop, request_stop
from fedloom.store.errors import StoreError

FINAL_STATUSES = ("completed", "failed", "interrupted")
"""How a run can end; a run is ``"running"`` from :meth:`RunStore.create_run` until then."""


STALE_AFTER_S = 3600.0
"""How long a run owned by a process on another machine may go without recording anything
before readers show it as possibly stale."""


@dataclass(frozen=True)
class RunInfo:
    """One run as the store knows it: identity, config, how it ended, how far it got."""

    id: str
    name: str
    status: str
    created: str
    finished: str | None
    duration: float | None
    seed: int
    code_version: str
    config: str
    config_format: str
    rounds_done: int
    stopped: str
    last_metrics: dict[str, float]


class RunStore:
    """Runs recorded in a SQLite file; open one with :meth:`RunStore.open`."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._conn: sqlite3.Connection | None = connection
        self.path = path

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True) -> RunStore:
        """Open the store at ``path``, creating its folder and tables when ``create`` allows."""
        path = Path(path)
        return cls(connect(path, create=create), path)

    @classmethod
    def open_read_only(cls, path: str | Path, *, timeout_s: float = 2.0) -> RunStore:
        """Open the existing store at ``path`` for reading only: its writing methods raise
        :class:`StoreError`, and the file is never modified (see ``connect_read_only``)."""
        path = Path(path)
        return cls(connect_read_only(path, timeout_s=timeout_s), path)

    def close(self) -> None:
        """Close the connection; further use raises :class:`StoreError`."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    def create_run(
        self, *, name: str, config: str, seed: int, code_version: str, config_format: str = "toml"
    ) -> str:
        """Record a new run as ``"running"`` and return its id, ``YYYYmmdd-HHMMSS-<6 hex>``."""
        for arg, value in (("name", name), ("config", config), ("code_version", code_version)):
            if not isinstance(value, str):
                raise TypeError(f"{arg} must be a str, got {type(value).__name__}")
        if not isinstance(config_format, str) or not config_format:
            raise ValueError(f"config_format must be a non-empty str, got {config_format!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        now = _now()
        while True:
            run_id = f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
            with transaction(self._connection, self.path) as conn:
                if conn.execute(schema.RUN_CREATED, (run_id,)).fetchone() is None:
                    conn.execute(
                        schema.INSERT_RUN,
                        (run_id, name, _iso(now), seed, code_version, config, config_format),
                    )
                    _claim(conn, run_id)
                    return run_id

    def record_round(
        self, run_id: str, record: RoundRecord, *, checkpoint: Checkpoint | None = None
    ) -> None:
        """Record one round and, when given, the checkpoint taken after it, in one transaction.

        Recording a round again replaces it (a resumed run re-runs the rounds after its
        checkpoint). A checkpoint replaces the run's previous one: only the newest is kept.
        """
        participants = _participants(record)
        round_ = int(record.round)
        metrics = {str(k): float(v) for k, v in record.metrics.items()}
        row = (
            run_id,
            round_,
            json.dumps(metrics),
            record.aborted,
            float(record.seconds),
            metrics.get("bytes_up"),
            metrics.get("bytes_down"),
        )
        saved = None if checkpoint is None else (checkpoint.round, encode_checkpoint(checkpoint))
        with transaction(self._connection, self.path) as conn:
            self._require_run(conn, run_id)
            conn.execute(schema.DELETE_PARTICIPANTS, (run_id, round_))
            conn.execute(schema.DELETE_ROUND, (run_id, round_))
            conn.execute(schema.INSERT_ROUND, row)
            conn.executemany(
                schema.INSERT_PARTICIPANT, [(run_id, round_, *p) for p in participants]
            )
            if saved is not None:
                conn.execute(schema.DELETE_CHECKPOINT, (run_id,))
                _insert_checkpoint(conn, run_id, *saved)
            if conn.execute(schema.HAS_OWNERS).fetchone() is not None:
                conn.execute(schema.BEAT, (_iso(_now()), run_id, *_this_process()))

    def finish(self, run_id: str, *, status: str, stopped: str = "") -> None:
        """Mark a run ended (``completed``, ``failed`` or ``interrupted``), with why it stopped."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {FINAL_STATUSES}, got {status!r}")
        now = _now()
        with transaction(self._connection, self.path) as conn:
            created = self._require_run(conn, run_id)
            duration = (now - datetime.fromisoformat(created)).total_seconds()
            conn.execute(schema.FINISH_RUN, (status, stopped, _iso(now), duration, run_id))

    def reopen(self, run_id: str) -> None:
        """Mark an ended run ``"running"`` again, before resuming it from its latest checkpoint;
        its duration, when it finishes again, counts from its creation."""
        with transaction(self._connection, self.path) as conn:
            self._require_run(conn, run_id)
            conn.execute(schema.REOPEN_RUN, (run_id,))
            _claim(conn, run_id)

    def runs(self) -> list[RunInfo]:
        """Every run, newest first."""
        return [_run_info(row) for row in self._read(schema.ALL_RUNS)]

    def run(self, run_id_or_prefix: str) -> RunInfo:
        """The run with this id, or the only run whose id starts with it."""
        rows = self._read(schema.RUN_BY_ID, (run_id_or_prefix,))
        if rows:
            return _run_info(rows[0])
        prefix = run_id_or_prefix
        ids = [r[0] for r in self._read(schema.RUN_IDS_WITH_PREFIX, (len(prefix), prefix))]
        if len(ids) == 1:
            return _run_info(self._read(schema.RUN_BY_ID, (ids[0],))[0])
        if ids:
            raise StoreError(
                f"{prefix!r} matches {len(ids)} runs ({_listing(ids)}); give more of the id"
            )
        recent = [r[0] for r in self._read(schema.RECENT_RUN_IDS, (5,))]
        known = f"recent runs: {_listing(recent)}" if recent else "the store has no runs"
        raise StoreError(f"no run {prefix!r} in {self.path}; {known}")

    def rounds(self, run_id: str) -> list[RoundRecord]:
        """A run's rounds in order, rebuilt as the engine recorded them: the cohort in sampling
        order, and accepted and rejected clients in cohort order, as the engine lists them."""
        self._require_run(self._connection, run_id)
        people: dict[int, list[tuple[int, str, str]]] = {}
        for round_, client, status, reason in self._read(schema.SELECT_PARTICIPANTS, (run_id,)):
            people.setdefault(round_, []).append((client, status, reason))
        records = []
        for round_, metrics, aborted, seconds in self._read(schema.SELECT_ROUNDS, (run_id,)):
            cohort = people.get(round_, [])
            records.append(
                RoundRecord(
                    round=round_,
                    cohort=tuple(c for c, _, _ in cohort),
                    accepted=tuple(c for c, s, _ in cohort if s == "accepted"),
                    rejected=tuple(Rejection(c, r) for c, s, r in cohort if s == "rejected"),
                    metrics=_metrics(metrics),
                    aborted=aborted,
                    seconds=seconds,
                )
            )
        return records

    def audit(self, run_id: str) -> AuditTrail:
        """The audit trail of run ``run_id`` (see :mod:`fedloom.store.audit`)."""
        self._require_run(self._connection, run_id)
        return AuditTrail(self._connection, self.path, run_id)

    def latest_checkpoint(self, run_id: str) -> Checkpoint | None:
        """The run's newest checkpoint, or ``None`` if it has none."""
        self._require_run(self._connection, run_id)
        rows = self._read(schema.SELECT_CHECKPOINT, (run_id,))
        return decode_checkpoint(bytes(rows[0][0])) if rows else None

    def request_stop(self, run_id: str, *, origin: str) -> StopRequest:
        """Ask the runner recording ``run_id`` to stop after its current round (see
        :mod:`fedloom.store.control`); StoreError unless the run exists and is running."""
        return request_stop(self._connection, self.path, run_id, origin=origin)

    def stop_request(self, run_id: str, *, since: str) -> StopRequest | None:
        """The first stop request for ``run_id`` made at or after ``since``, if any."""
        return pending_stop(self._connection, self.path, run_id, since=since)

    def record_sites(self, run_id: str, sites: Sequence[str]) -> None:
        """Record a deployed run's population: client ``i`` is the site named ``sites[i]`` (the
        identity in its certificate), so each round's participants can be named."""
        with transaction(self._connection, self.path) as conn:
            self._require_run(conn, run_id)
            conn.execute(schema.SITES_TABLE)
            conn.execute(schema.DELETE_SITES, (run_id,))
            conn.executemany(
                schema.INSERT_SITE, [(run_id, i, str(site)) for i, site in enumerate(sites)]
            )

    def owner(self, run_id: str) -> RunOwner | None:
        """The process that last created, reopened or recorded a round of the run (None for a
        run recorded by a fedloom that kept no owners)."""
        self._require_run(self._connection, run_id)
        if not self._read(schema.HAS_OWNERS):
            return None
        rows = self._read(schema.SELECT_OWNER, (run_id,))
        if not rows:
            return None
        host, pid, heartbeat = rows[0]
        return RunOwner(str(host), int(pid), str(heartbeat))

    def shown_status(self, info: RunInfo, *, stale_after: float = STALE_AFTER_S) -> str:
        """``info.status`` as a reader should see it: a ``running`` run whose owning process on
        this machine is gone is ``interrupted (stale: …)``; one owned elsewhere and silent for
        more than ``stale_after`` seconds is ``stale? (…)``. The store itself is not changed:
        resuming the run (``fedloom run --resume``, ``fedloom server``) marks it again."""
        if info.status != "running":
            return info.status
        owner = self.owner(info.id)
        if owner is None:
            return info.status
        if owner.host == socket.gethostname():
            if _alive(owner.pid):
                return info.status
            return f"interrupted (stale: its process {owner.pid} is gone)"
        silent = (_now() - datetime.fromisoformat(owner.heartbeat)).total_seconds()
        if silent > stale_after:
            return f"stale? (nothing from {owner.host} pid {owner.pid} for {silent / 60:.0f} min)"
        return info.status

    def sites(self, run_id: str) -> list[str]:
        """A deployed run's site names by client index; empty for a simulated run."""
        self._require_run(self._connection, run_id)
        if not self._read(schema.HAS_SITES):
            return []
        return [str(row[0]) for row in self._read(schema.SELECT_SITES, (run_id,))]

    @property
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the store {self.path} is closed; open it again")
        return self._conn

    def _read(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._connection.execute(statement, params).fetchall()
        except sqlite3.Error as error:
            raise StoreError(f"cannot read the store {self.path}: {error}") from None

    def _require_run(self, conn: sqlite3.Connection, run_id: str) -> str:
        """The run's creation time; StoreError if there is no such run."""
        try:
            row = conn.execute(schema.RUN_CREATED, (run_id,)).fetchone()
        except sqlite3.Error as error:
            raise StoreError(f"cannot read the store {self.path}: {error}") from None
        if row is None:
            raise StoreError(f"no run {run_id!r} in {self.path}")
        return str(row[0])


def _insert_checkpoint(conn: sqlite3.Connection, run_id: str, round_: int, data: bytes) -> None:
    """Store ``data`` as ``run_id``'s checkpoint, written a megabyte at a time into a row made
    with room for it. Bound as a statement's parameter, SQLite would copy the bytes (a whole
    model, for a large one) and the cached statement would keep that copy until it is next
    run, so the server would hold an extra model between checkpoints."""
    cursor = conn.execute(schema.INSERT_CHECKPOINT, (run_id, round_, len(data), _iso(_now())))
    row = cursor.lastrowid
    assert row is not None
    view = memoryview(data)
    with conn.blobopen("checkpoints", "data", row) as blob:
        for start in range(0, len(view), CHECKPOINT_WRITE):
            blob.write(view[start : start + CHECKPOINT_WRITE])


CHECKPOINT_WRITE = 1 << 20


def _participants(record: RoundRecord) -> list[tuple[int, int, str, str]]:
    """``(position, client, status, reason)`` per cohort member; ValueError unless accepted and
    rejected clients split the cohort exactly."""
    cohort = [int(c) for c in record.cohort]
    reasons = {int(r.client): r.reason for r in record.rejected}
    accepted = {int(c) for c in record.accepted}
    consistent = (
        len(set(cohort)) == len(cohort)
        and len(reasons) == len(record.rejected)
        and len(accepted) == len(record.accepted)
        and not accepted & reasons.keys()
        and accepted | reasons.keys() == set(cohort)
    )
    if not consistent:
        raise ValueError(
            f"round {record.round}: the cohort {record.cohort} must list each client once, and "
            "each must be either accepted or rejected"
        )
    return [
        (i, c, "accepted", "") if c in accepted else (i, c, "rejected", reasons[c])
        for i, c in enumerate(cohort)
    ]


def _run_info(row: Sequence[Any]) -> RunInfo:
    """A :class:`RunInfo` from a row of ``schema.ALL_RUNS``."""
    (id_, name, status, created, finished, duration, seed, code_version, config, config_format,
     stopped, rounds_done, last_metrics) = row  # fmt: skip
    return RunInfo(
        id=id_,
        name=name,
        status=status,
        created=created,
        finished=finished,
        duration=duration,
        seed=seed,
        code_version=code_version,
        config=config,
        config_format=config_format,
        rounds_done=rounds_done,
        stopped=stopped,
        last_metrics=_metrics(last_metrics) if last_metrics else {},
    )


def _metrics(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in json.loads(text).items()}


def _listing(ids: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(ids[:most])
    return shown + (f", … ({len(ids) - most} more)" if len(ids) > most else "")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


@dataclass(frozen=True)
class RunOwner:
    """The process that writes a run: its machine's host name, its pid, and when it last wrote
    (ISO 8601, UTC)."""

    host: str
    pid: int
    heartbeat: str


def _this_process() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def _claim(conn: sqlite3.Connection, run_id: str) -> None:
    """Record this process as the run's owner (creating the ``owners`` table if needed)."""
    conn.execute(schema.OWNERS_TABLE)
    conn.execute(schema.CLAIM_RUN, (run_id, *_this_process(), _iso(_now())))


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one we may not signal still does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
