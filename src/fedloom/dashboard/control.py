"""The dashboard's only write: recording a control action, which the running runner honours.

Every control action goes through :func:`record_control_action`, and nothing else in the
dashboard opens the store for writing. Each action is also a ``control`` entry in the run's
audit trail (:mod:`fedloom.store.audit`), written by the store in the same transaction as the
request itself, so an action that is not audited is not taken either.
"""

from __future__ import annotations

from pathlib import Path

from fedloom.store import RunStore, StopRequest

ACTIONS = ("stop",)


def record_control_action(store: Path, *, run_id: str, action: str, origin: str) -> StopRequest:
    """Record ``action`` on ``run_id``, asked for by ``origin`` (an address, never a credential).

    ``stop`` asks the runner recording the run to stop after its current round; the runner
    checks between rounds, records and checkpoints the round, and marks the run
    ``interrupted`` with the request's origin and time as the reason (it can be resumed).
    The run's audit trail gains a ``control`` entry ``{"action": "stop", "origin": origin,
    "requested": time}`` in the same transaction. Raises StoreError when the run does not exist
    or is not running (and then nothing is written).
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {list(ACTIONS)}, got {action!r}")
    with RunStore.open(store, create=False) as writable:
        return writable.request_stop(run_id, origin=origin)
