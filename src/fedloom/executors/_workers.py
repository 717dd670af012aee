"""What the executors that fan clients out share: who holds which clients, which tasks may run
together, how a client's exception is reported, and one PyTorch thread per worker."""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections import Counter
from collections.abc import Sequence

from fedloom.data import ClientData
from fedloom.engine.tasks import Failure, Task, TrainTask


def partition(clients: Sequence[ClientData], workers: int) -> dict[int, int]:
    """Each client's worker, balancing training examples: largest client first, each to the
    worker holding the fewest so far (ties to fewer clients, then the lower index)."""
    examples = [0] * workers
    counts = [0] * workers
    assignment: dict[int, int] = {}
    for client in sorted(clients, key=lambda c: (-c.num_train, c.client_id)):
        worker = min(range(workers), key=lambda w: (examples[w], counts[w], w))
        assignment[client.client_id] = worker
        examples[worker] += client.num_train
        counts[worker] += 1
    return dict(sorted(assignment.items()))


def failure_from(error: BaseException) -> Failure:
    """A client's exception as its reply: ``Type: message`` (as in process), then the traceback
    of the exception being handled, to find the bug by."""
    return Failure(f"{type(error).__name__}: {error}\n{traceback.format_exc().rstrip()}")


def single_threaded_torch() -> None:
    """One intra-op thread per worker when the program brought PyTorch in (the workers already
    use the cores); a program without PyTorch never imports it."""
    torch = sys.modules.get("torch")
    if torch is not None:
        with contextlib.suppress(Exception):
            torch.set_num_threads(1)


def waves(tasks: Sequence[Task]) -> list[list[int]]:
    """Task positions in waves within which no client trains twice (other tasks go in the
    first); each wave runs after the previous one, so a repeated client starts from the state
    its earlier task left."""
    groups: list[list[int]] = [[]]
    seen: Counter[int] = Counter()
    for position, task in enumerate(tasks):
        occurrence = 0
        if isinstance(task, TrainTask):
            occurrence = seen[task.client]
            seen[task.client] += 1
        while occurrence >= len(groups):
            groups.append([])
        groups[occurrence].append(position)
    return groups
