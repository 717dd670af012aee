"""The dashboard's JSON API: read-only routes over the run store and the live server state.

Every route is documented in ``docs/dashboard.md``. Reads open the store read-only for the one
request and close it again, so the dashboard holds no lock between requests and a dashboard
killed at any moment leaves the store as it was. The one write is a control action
(:func:`fedloom.dashboard.control.record_control_action`), which the server lets through only
with the access token.

Errors are exceptions the server turns into statuses: :class:`BadRequest` (400, with the reason),
:class:`~fedloom.dashboard.queries.NotFound` (404), and
:class:`~fedloom.store.StoreError` (503: the store is missing, locked, or from a newer schema).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fedloom.dashboard import queries, trail
from fedloom.dashboard.control import record_control_action
from fedloom.dashboard.live import LiveState
from fedloom.store import FINAL_STATUSES, RunStore, StoreError

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""What a run id may look like in an address (the store's ids are ``YYYYmmdd-HHMMSS-xxxxxx``)."""
METRIC = re.compile(r"[A-Za-z0-9_.:/-]{1,100}")
MAX_COMPARED = 10
STATUSES = ("running", *FINAL_STATUSES)
API_VERSION = 1

Json = dict[str, Any]


class BadRequest(ValueError):
    """A malformed request: HTTP 400, with this message as the reason."""


@dataclass(frozen=True)
class Api:
    """The routes, over the store at ``store`` and, when given, a running server's ``live``
    state. ``control`` says whether control actions are enabled (a token is configured)."""

    store: Path
    live: LiveState | None = None
    control: bool = False
    poll_seconds: float = 2.0
    timeout_s: float = 2.0

    def get(self, path: str, query: str) -> Json | list[Json]:
        """Answer ``GET path?query``."""
        params = _params(query)
        parts = [p for p in path.split("/") if p][1:]  # drop the leading "api"
        if parts == ["info"]:
            _only(params)
            return self.info()
        if parts == ["live"]:
            _only(params)
            return self.live_state()
        if parts == ["runs"]:
            _only(params, "status")
            status = params.get("status")
            if status is not None and status not in STATUSES:
                raise BadRequest(f"status must be one of {list(STATUSES)}, got {status!r}")
            with self._store() as store:
                return queries.runs_list(store, status=status)
        if parts == ["compare"]:
            _only(params, "runs", "metric")
            run_ids = _run_list(params.get("runs"))
            metric = params.get("metric", "test_accuracy")
            if not METRIC.fullmatch(metric):
                raise BadRequest(f"metric must be 1-100 letters, digits or _.:/-, got {metric!r}")
            with self._store() as store:
                return queries.comparison(store, run_ids, metric=metric)
        if len(parts) in (2, 3) and parts[0] == "runs":
            run_id = run_id_from(parts[1])
            if len(parts) == 2:
                _only(params)
                with self._store() as store:
                    return queries.run_detail(store, run_id)
            if parts[2] == "rounds":
                _only(params, "since")
                since = _non_negative_int("since", params.get("since", "0"))
                with self._store() as store:
                    return queries.rounds_detail(store, run_id, since=since)
            if parts[2] == "audit":
                _only(params, "since")
                since = _non_negative_int("since", params.get("since", "0"), "entries")
                with self._store() as store:
                    return trail.audit_detail(store, run_id, since=since)
        raise queries.NotFound(f"no API route {path!r}; see docs/dashboard.md")

    def info(self) -> Json:
        return {
            "api_version": API_VERSION,
            "store": str(self.store),
            "control": self.control,
            "live": self.live is not None,
            "poll_seconds": self.poll_seconds,
        }

    def live_state(self) -> Json:
        """Connected sites and the round in flight; ``available: false`` without a server."""
        if self.live is None:
            return {"available": False, "sites": [], "progress": None, "now": time.time()}
        progress = self.live.progress()
        return {
            "available": True,
            "now": time.time(),
            "sites": [asdict(site) for site in self.live.sites()],
            "progress": None if progress is None else asdict(progress),
        }

    def stop(self, run_id: str, *, origin: str) -> Json:
        """Ask the runner of ``run_id`` to stop after its current round (the caller has checked
        the token). :class:`Conflict` when the run is not running."""
        run_id = run_id_from(run_id)
        self._require_running(run_id)
        try:
            request = record_control_action(self.store, run_id=run_id, action="stop", origin=origin)
        except StoreError:
            self._require_running(run_id)  # it ended in the meantime: say so
            raise
        return {"run": run_id, "action": "stop", "requested": request.requested,
                "note": "the run stops after its current round"}  # fmt: skip

    def _require_running(self, run_id: str) -> None:
        with self._store() as store:
            info = queries.find_run(store, run_id)
        if info.status != "running":
            raise Conflict(f"run {run_id} is {info.status}, not running; there is nothing to stop")

    def check_run(self, run_id: str) -> None:
        """NotFound unless ``run_id`` is a run in the store (for the run page's status)."""
        if not RUN_ID.fullmatch(run_id):
            raise queries.NotFound(f"no run {run_id!r} in the store")
        with self._store() as store:
            queries.find_run(store, run_id)

    @contextmanager
    def _store(self) -> Iterator[RunStore]:
        store = RunStore.open_read_only(self.store, timeout_s=self.timeout_s)
        try:
            yield store
        finally:
            store.close()


class Conflict(ValueError):
    """The request is well formed but the run's state forbids it: HTTP 409."""


def run_id_from(text: str) -> str:
    if not RUN_ID.fullmatch(text):
        raise BadRequest(
            f"run id must be 1-64 letters, digits or _.- starting with a letter or digit, "
            f"got {text[:80]!r}"
        )
    return text


def _params(query: str) -> dict[str, str]:
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except ValueError as error:
        raise BadRequest(f"malformed query string: {error}") from None
    repeated = sorted(k for k, v in parsed.items() if len(v) > 1)
    if repeated:
        raise BadRequest(f"parameters given more than once: {repeated}")
    return {k: v[0] for k, v in parsed.items()}


def _only(params: Mapping[str, str], *accepted: str) -> None:
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        allowed = ", ".join(accepted) if accepted else "none"
        raise BadRequest(f"unknown parameter {unknown[0]!r}; this route accepts: {allowed}")


def _non_negative_int(name: str, text: str, what: str = "rounds") -> int:
    if not text.isdigit() or len(text) > 9:
        raise BadRequest(f"{name} must be a whole number of {what} >= 0, got {text[:40]!r}")
    return int(text)


def _run_list(text: str | None) -> list[str]:
    if text is None or not text.strip():
        raise BadRequest("runs is required: comma-separated run ids, e.g. runs=ID1,ID2")
    ids = [run_id_from(part.strip()) for part in text.split(",")]
    if len(ids) > MAX_COMPARED:
        raise BadRequest(f"runs may name at most {MAX_COMPARED} runs, got {len(ids)}")
    if len(set(ids)) != len(ids):
        raise BadRequest(f"runs names a run more than once: {text[:200]!r}")
    return ids


__all__ = ["Api", "BadRequest", "Conflict", "StoreError", "run_id_from"]
