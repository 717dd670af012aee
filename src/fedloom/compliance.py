"""``fedloom audit report``: a run's compliance summary, in Markdown, for a data-protection
officer.

Everything in it comes from the run store and its audit trail (:mod:`fedloom.store.audit`):
who took part, what left each site and how it was protected, the policies in force and every
refusal, every control action (a stop asked from the dashboard), each global model's
provenance, and whether the trail verifies. It states plainly what was *not* in place (no
secure aggregation, no differential privacy) rather than omitting it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fedloom.experiment.policy_spec import SECURE_AGGREGATION_STAGES
from fedloom.store import AuditEntry, RunInfo, RunStore, Verification

COMPRESSION_STAGES = ("topk", "quantize", "compress", "sketch")
MODEL_ROWS = 30
"""Provenance rows shown before the table is cut (the trail keeps them all)."""


def verify_run(store: RunStore, info: RunInfo, expected_head: str | None = None) -> Verification:
    """Verify run ``info``'s trail against the store's own record of its rounds and status."""
    return store.audit(info.id).verify(
        expected_head=expected_head,
        rounds=[r.round for r in store.rounds(info.id)],
        finished=info.status in ("completed", "failed", "interrupted"),
    )


def compliance_report(store: RunStore, run_id: str) -> str:
    """The Markdown summary of run ``run_id``."""
    info = store.run(run_id)
    entries = store.audit(info.id).entries()
    result = verify_run(store, info)
    started = next((e.payload for e in entries if e.kind == "run_started"), {})
    rounds = [e for e in entries if e.kind == "round"]
    lines = [
        f"# Compliance summary: run {info.id} ({info.name})",
        "",
        f"Written {datetime.now(UTC):%Y-%m-%d %H:%M UTC} from the run store `{store.path}`.",
        f"Run status: **{info.status}** ({info.stopped or 'no reason recorded'}); created "
        f"{info.created}, finished {info.finished or '—'}; code version {info.code_version}.",
        "",
        "## Audit trail",
        "",
        *_verification(result),
        "",
        "## Parties",
        "",
        *_parties(entries, rounds),
        "",
        "## What left each site",
        "",
        *_protection(started, rounds),
        "",
        "## Policies in force",
        "",
        *_policies(entries),
        "",
        "## Refusals",
        "",
        *_refusals(entries, rounds),
        "",
        "## Control actions",
        "",
        *_controls(entries),
        "",
        "## Model provenance",
        "",
        *_models(entries),
        "",
    ]
    return "\n".join(lines)


def _verification(result: Verification) -> list[str]:
    if result.ok:
        return [
            f"**Verified.** All {result.entries} entries are intact and in order (SHA-256 hash "
            f"chain). Head hash: `{result.head}`. Keep this hash somewhere the operator cannot "
            "write; `fedloom audit verify RUN --head HASH` later proves nothing was removed "
            "from the end."
        ]
    return [
        f"**FAILED: {result.problem}.** The first {result.entries} entries check out; from this "
        "entry on, the record cannot be trusted. Everything below is read from the store as "
        "it is now."
    ]


def _parties(entries: Sequence[AuditEntry], rounds: Sequence[AuditEntry]) -> list[str]:
    joins = [e.payload for e in entries if e.kind == "join"]
    if not joins:
        return ["No party joined (no `join` entries)."]
    took_part: dict[str, int] = {}
    refused: dict[str, int] = {}
    for entry in rounds:
        for who in entry.payload.get("participants", []):
            took_part[who] = took_part.get(who, 0) + 1
        for item in entry.payload.get("refused", []):
            refused[item["identity"]] = refused.get(item["identity"], 0) + 1
    lines = [
        f"{len(joins)} parties joined. Identities are as the deployment knows them (in "
        "simulation `client-<id>`; over gRPC, certificate subjects).",
        "",
        "| party | joined in round | rounds its update was used | updates refused |",
        "|---|---|---|---|",
    ]
    for join in joins:
        who = str(join.get("identity"))
        lines.append(
            f"| {who} | {join.get('round')} | {took_part.get(who, 0)} | {refused.get(who, 0)} |"
        )
    return lines


def _protection(started: dict[str, Any], rounds: Sequence[AuditEntry]) -> list[str]:
    stages = [str(s) for s in started.get("stages", [])]
    secagg = [s for s in stages if s in SECURE_AGGREGATION_STAGES]
    compression = [s for s in stages if s in COMPRESSION_STAGES]
    privacy = next((e.payload.get("privacy") for e in reversed(rounds)
                    if e.payload.get("privacy")), None)  # fmt: skip
    lines = [
        "- **Data:** no training examples or labels left any site. Each site sent, per round "
        "it took part in, one model update (new minus received parameters, float32), its "
        "example count and its training metrics (loss, accuracy). The hash of every update "
        "received is in the trail's `round` entries.",
        "- **Secure aggregation:** "
        + (
            f"yes ({', '.join(secagg)}): the server saw only the sum of the updates."
            if secagg
            else "**no**: the server saw each site's update individually."
        ),
    ]
    if privacy:
        eps = privacy.get("dp.epsilon")
        delta = privacy.get("dp.delta", "not recorded")
        lines.append(
            f"- **Differential privacy:** yes; privacy spent by the last round: ε = {eps}, "
            f"δ = {delta}."
        )
    else:
        lines.append(
            "- **Differential privacy:** **no**: no round recorded privacy spent (`dp.epsilon`); "
            "the updates carry no formal privacy guarantee."
        )
    clip = "yes (each update's norm bounded on the site)" if "clip" in stages else "no"
    lines.append(f"- **Clipping:** {clip}.")
    lines.append(f"- **Compression:** {', '.join(compression) if compression else 'none'}.")
    reducer = started.get("reducer", "recipe default")
    attackers = started.get("attackers")
    robust = f"{reducer}" + (f", tolerating {attackers} malicious parties" if attackers else "")
    lines.append(f"- **Aggregation:** {robust} (algorithm {started.get('algorithm', '?')}).")
    if started.get("config_sha256"):
        lines.append(f"- **Configuration:** SHA-256 `{started['config_sha256']}`.")
    return lines


def _policies(entries: Sequence[AuditEntry]) -> list[str]:
    policies = [e for e in entries if e.kind == "policy"]
    if not policies:
        return ["No federation policy was recorded for this run."]
    lines = []
    for entry in policies:
        payload = entry.payload
        what = payload.get("decision", "policy")
        details = "; ".join(f"{k} = {v}" for k, v in sorted(payload.items()) if k != "decision")
        lines.append(f"- entry {entry.seq}: **{what}**: {details}")
    return lines


def _refusals(entries: Sequence[AuditEntry], rounds: Sequence[AuditEntry]) -> list[str]:
    lines = []
    for entry in entries:
        if entry.kind == "refusal":
            payload = entry.payload
            lines.append(
                f"- {payload.get('identity', '?')} refused by {payload.get('by', 'policy')}: "
                f"{payload.get('reason', '')}"
            )
    for entry in rounds:
        for item in entry.payload.get("refused", []):
            lines.append(
                f"- round {entry.payload.get('round')}: update from {item['identity']} not used: "
                f"{item['reason']}"
            )
        if entry.payload.get("aborted"):
            lines.append(
                f"- round {entry.payload.get('round')} aborted: {entry.payload['aborted']}"
            )
    return lines or ["None."]


def _controls(entries: Sequence[AuditEntry]) -> list[str]:
    """Every ``control`` entry: an action someone asked of the run while it ran (a stop)."""
    lines = [
        f"- entry {e.seq}, {e.payload.get('requested', e.created)}: **{e.payload.get('action')}** "
        f"asked by {e.payload.get('origin', 'unknown')}"
        for e in entries
        if e.kind == "control"
    ]
    return lines or ["None: nobody stopped or steered the run while it ran."]


def _models(entries: Sequence[AuditEntry]) -> list[str]:
    models = [e.payload for e in entries if e.kind == "model"]
    if not models:
        return ["No global model was produced."]
    lines = [
        "Each round's global model, the model it started from, and the parties whose updates "
        "produced it (hashes: SHA-256 of the float32 parameters, first 16 hex digits).",
        "",
        "| round | model | from | parties |",
        "|---|---|---|---|",
    ]
    shown = models if len(models) <= MODEL_ROWS else models[-MODEL_ROWS:]
    for model in shown:
        parent = str(model.get("parent") or "")[:16]
        lines.append(
            f"| {model.get('round')} | `{str(model.get('hash'))[:16]}` | `{parent}` | "
            f"{len(model.get('participants', []))} |"
        )
    if len(shown) < len(models):
        lines.append(f"\n(the last {MODEL_ROWS} of {len(models)} rounds; the trail holds all)")
    return lines
