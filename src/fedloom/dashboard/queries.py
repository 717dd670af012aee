"""What the dashboard's JSON API answers, read from the run store: plain JSON-ready values.

Numbers that JSON cannot hold (NaN, ±Infinity, which metrics may contain) become ``null``.
A run's configuration is returned parsed, with every value whose key names a secret replaced by
``"[redacted]"``; its raw text is never returned.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from fedloom.engine import RoundRecord
from fedloom.store import RunInfo, RunStore

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|credential|api[_-]?key|private[_-]?key|auth)", re.I
)
EPSILON, DELTA, BUDGET = "dp.epsilon", "dp.delta", "dp.epsilon_budget"
"""Privacy metrics per round (the DP stages' names) and, when a run reports it, its budget."""
SECAGG_PREFIX = "secagg."
_BUDGET_KEYS = ("epsilon_budget", "target_epsilon", "budget")

Json = dict[str, Any]


class NotFound(LookupError):
    """The run (or another named thing) does not exist: HTTP 404."""


def run_summary(info: RunInfo) -> Json:
    """One line of the runs list."""
    return {
        "id": info.id,
        "name": info.name,
        "status": info.status,
        "created": info.created,
        "finished": info.finished,
        "duration": finite(info.duration),
        "rounds_done": info.rounds_done,
        "stopped": info.stopped,
        "last_metrics": metrics_json(info.last_metrics),
    }


def runs_list(store: RunStore, *, status: str | None = None) -> list[Json]:
    """Every run, newest first; only those with ``status`` when given."""
    return [run_summary(i) for i in store.runs() if status is None or i.status == status]


def find_run(store: RunStore, run_id: str) -> RunInfo:
    """The run with exactly this id; :class:`NotFound` otherwise (prefixes are not accepted:
    an address names one run for good)."""
    for info in store.runs():
        if info.id == run_id:
            return info
    raise NotFound(f"no run {run_id!r} in the store")


def run_detail(store: RunStore, run_id: str) -> Json:
    """One run: its summary, seed and code version, its redacted configuration, a deployed run's
    sites (client ``i`` is ``sites[i]``, the identity in its certificate; ``None`` for a
    simulation), and what its rounds say about privacy and secure aggregation."""
    info = find_run(store, run_id)
    config = redacted_config(info.config, info.config_format)
    rounds = store.rounds(info.id)
    return run_summary(info) | {
        "seed": info.seed,
        "code_version": info.code_version,
        "sites": store.sites(info.id) or None,
        "config": config,
        "privacy": privacy_summary(rounds, config),
        "secure_aggregation": secagg_summary(rounds),
    }


def rounds_detail(store: RunStore, run_id: str, *, since: int = 0) -> Json:
    """A run's rounds numbered ``since`` or later, each with its participants and metrics."""
    info = find_run(store, run_id)
    sites = store.sites(info.id)
    rounds = [round_json(r, sites) for r in store.rounds(info.id) if r.round >= since]
    return {"run": info.id, "status": info.status, "rounds_done": info.rounds_done,
            "rounds": rounds}  # fmt: skip


def comparison(store: RunStore, run_ids: Sequence[str], *, metric: str) -> Json:
    """``metric`` per round for each run, and every metric name the runs report."""
    infos = [find_run(store, r) for r in run_ids]
    series = []
    names: set[str] = set()
    for info in infos:
        rounds = store.rounds(info.id)
        for r in rounds:
            names.update(r.metrics)
        series.append(
            {
                "id": info.id,
                "name": info.name,
                "status": info.status,
                "rounds": [r.round for r in rounds],
                "values": [finite(r.metrics.get(metric)) for r in rounds],
            }
        )
    return {"metric": metric, "metrics": sorted(names), "runs": series}


def round_json(record: RoundRecord, sites: Sequence[str] = ()) -> Json:
    """One round: who took part, who dropped out, straggled or was rejected, and its metrics.

    With a deployed run's ``sites`` (client ``i`` is ``sites[i]``), clients are also named:
    ``accepted_sites`` and each entry's ``site``; both are ``null`` for a simulated run.
    """

    def name(client: int) -> str | None:
        return sites[client] if 0 <= client < len(sites) else None

    groups: dict[str, list[Json]] = {"dropped": [], "straggled": [], "rejected": []}
    for rejection in record.rejected:
        groups[rejection_kind(rejection.reason)].append(
            {"client": rejection.client, "site": name(rejection.client),
             "reason": rejection.reason}
        )  # fmt: skip
    return {
        "round": record.round,
        "cohort": len(record.cohort),
        "accepted": list(record.accepted),
        "accepted_sites": [name(c) for c in record.accepted] if sites else None,
        **groups,
        "aborted": record.aborted,
        "seconds": finite(record.seconds),
        "bytes_up": finite(record.metrics.get("bytes_up")),
        "bytes_down": finite(record.metrics.get("bytes_down")),
        "metrics": metrics_json(record.metrics),
    }


def rejection_kind(reason: str) -> str:
    """``"dropped"`` (unreachable or left), ``"straggled"`` (too slow for the deadline or the
    over-selection cut) or ``"rejected"`` (the update itself was refused), from the reason the
    engine recorded."""
    text = reason.lower()
    if text.startswith(("straggler", "over-selected")):
        return "straggled"
    if text.startswith(("unavailable", "dropped")):
        return "dropped"
    return "rejected"


def privacy_summary(rounds: Sequence[RoundRecord], config: Json | None) -> Json | None:
    """ε and δ spent per round and the budget, or ``None`` when the run reports no ``dp.epsilon``.

    The budget is the last ``dp.epsilon_budget`` metric, else the run file's ``[privacy]``
    ``epsilon_budget``, ``target_epsilon`` or ``budget``, else ``null``.
    """
    spent = [(r.round, r.metrics[EPSILON]) for r in rounds if EPSILON in r.metrics]
    if not spent:
        return None
    budgets = [r.metrics[BUDGET] for r in rounds if BUDGET in r.metrics]
    budget = budgets[-1] if budgets else _configured_budget(config)
    deltas = [r.metrics[DELTA] for r in rounds if DELTA in r.metrics]
    return {
        "rounds": [r for r, _ in spent],
        "epsilon": [finite(e) for _, e in spent],
        "delta": finite(deltas[-1]) if deltas else None,
        "budget": finite(budget),
    }


def secagg_summary(rounds: Sequence[RoundRecord]) -> Json | None:
    """Rounds that ran secure aggregation (reported ``secagg.*`` metrics) and the rounds that
    aborted; ``None`` when no round used it."""
    on = [r for r in rounds if any(k.startswith(SECAGG_PREFIX) for k in r.metrics)]
    if not on:
        return None
    aborted = [
        {"round": r.round, "reason": r.aborted or "secure aggregation aborted"}
        for r in on
        if r.aborted is not None or r.metrics.get("secagg.aborted", 0.0) > 0
    ]
    return {"rounds": [r.round for r in on], "aborted": aborted}


def redacted_config(text: str, config_format: str) -> Json | None:
    """The run file parsed, secrets redacted; ``None`` when it is not TOML that parses."""
    if config_format != "toml":
        return None
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
    redacted: Json = _redact(parsed)
    return redacted


def metrics_json(metrics: Mapping[str, float]) -> dict[str, float | None]:
    return {k: finite(v) for k, v in metrics.items()}


def finite(value: float | None) -> float | None:
    """``value``, or ``None`` when it is missing or not a finite number."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_KEY.search(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):  # TOML dates and times
        return value.isoformat()
    return value


def _configured_budget(config: Json | None) -> float | None:
    section = (config or {}).get("privacy")
    if not isinstance(section, dict):
        return None
    for key in _BUDGET_KEYS:
        value = section.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None
