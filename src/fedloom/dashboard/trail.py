"""What the dashboard shows of a run's audit trail (:mod:`fedloom.store.audit`): each entry in
brief, and whether the chain verifies, with the first bad entry and why when it does not.

Verification only reads, so it runs through the dashboard's read-only connection: the store
file is never touched. The rules are those of ``fedloom audit verify``: the hash chain, a
``round`` entry for every round the store recorded, and a finished run's trail ending with
``run_finished``. Payloads are summarized here as plain text (the page shows it as text: a site
named ``<script>…`` stays those characters) and cut to :data:`MAX_SUMMARY` characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedloom.dashboard.queries import find_run
from fedloom.store import FINAL_STATUSES, AuditEntry, RunStore, Verification

SHORT_HASH = 16
"""Hex digits of an entry's hash shown in the list (the head is given in full)."""
MAX_SUMMARY = 240
_HEX = frozenset("0123456789abcdef")

Json = dict[str, Any]


def audit_detail(store: RunStore, run_id: str, *, since: int = 0) -> Json:
    """Run ``run_id``'s trail entries numbered ``since`` or later, and the whole chain's
    verification.

    Each entry's ``state`` is ``"ok"`` (it and every entry before it check out), ``"bad"``
    (the first entry that does not) or ``"unverified"`` (after the bad one, or appended while
    the trail was being checked).
    """
    info = find_run(store, run_id)
    # The rounds before the trail: the runner writes a round's entry before the round, so every
    # round read here already has its entry when the trail is read next.
    rounds = [r.round for r in store.rounds(info.id)]
    trail = store.audit(info.id)
    result = trail.verify(rounds=rounds, finished=info.status in FINAL_STATUSES)
    entries = trail.entries()
    shown = [
        entry_json(entry, _state(index, result))
        for index, entry in enumerate(entries)
        if entry.seq >= since
    ]
    return {"run": info.id, "status": info.status, "verification": verification_json(result),
            "total": len(entries), "entries": shown}  # fmt: skip


def verification_json(result: Verification) -> Json:
    """``ok``, how many entries check out, the head hash, and the first problem (or ``null``)."""
    problem = result.problem
    first_bad = None
    if problem is not None:
        first_bad = {"seq": problem.seq, "kind": problem.kind or None, "reason": problem.reason,
                     "text": str(problem)}  # fmt: skip
    return {"ok": result.ok, "entries": result.entries, "head": result.head,
            "problem": first_bad}  # fmt: skip


def entry_json(entry: AuditEntry, state: str) -> Json:
    """One entry as listed: its number, kind, time, short hash, payload in brief, and state."""
    return {
        "seq": entry.seq,
        "kind": entry.kind,
        "created": entry.created,
        "hash": entry.hash[:SHORT_HASH],
        "summary": summary(entry.kind, entry.payload),
        "state": state,
    }


def summary(kind: str, payload: Any) -> str:
    """A one-line plain-text account of an entry's payload."""
    if not isinstance(payload, Mapping):
        return _cut(_text(payload))
    get = payload.get
    if kind == "join":
        text = f"{_text(get('identity'))} joined in round {_text(get('round'))}"
    elif kind == "round":
        text = (
            f"round {_text(get('round'))}: {_count(get('participants'))} took part, "
            f"{_count(get('refused'))} refused, {_count(get('updates'))} update hashes, "
            f"model sent {_text(get('model_sent'))}"
        )
        if get("aborted"):
            text += f"; aborted: {_text(get('aborted'))}"
        privacy = get("privacy")
        if isinstance(privacy, Mapping) and privacy:
            text += f"; privacy spent {_pairs(privacy)}"
    elif kind == "model":
        text = (
            f"round {_text(get('round'))}: model {_text(get('hash'))} from "
            f"{_text(get('parent'))}, {_count(get('participants'))} parties"
        )
    elif kind == "control":
        text = (
            f"{_text(get('action'))} asked by {_text(get('origin'))} at {_text(get('requested'))}"
        )
    else:
        text = _pairs(payload)
    return _cut(text)


def _state(index: int, result: Verification) -> str:
    if index < result.entries:
        return "ok"
    if index == result.entries and result.problem is not None:
        return "bad"
    return "unverified"


def _pairs(payload: Mapping[Any, Any]) -> str:
    return "; ".join(f"{key} = {_text(value)}" for key, value in sorted(payload.items(), key=str))


def _text(value: Any) -> str:
    """A value in brief: hashes shortened, lists and mappings counted when long."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return f"{value[:12]}…" if len(value) == 64 and set(value) <= _HEX else value
    if isinstance(value, list):
        if len(value) <= 3 and all(not isinstance(v, list | Mapping) for v in value):
            return "[" + ", ".join(_text(v) for v in value) + "]"
        return f"[{len(value)} items]"
    if isinstance(value, Mapping):
        return f"{{{len(value)} entries}}"
    return str(value)


def _count(value: Any) -> int:
    return len(value) if isinstance(value, list | Mapping) else 0


def _cut(text: str) -> str:
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"
