"""The server's check that every deployed site clipped its update, for central DP.

Central DP-FedAvg's guarantee rests on each update's L2 norm being at most the round's bound
``C``: the noise ``z·C`` is calibrated to it. In simulation the client half runs in the engine's
own process; in a deployment it runs at the sites, which the server does not control. So the
server checks what it can see: every training reply's update must have norm at most ``C`` (the
bound the task carried, in float32 rounding), and, with adaptive clipping, the site's report
``dp.unclipped`` must be ``±½`` and agree with that norm (an update well inside the bound was
not clipped, so it must say so). A reply that fails becomes a :class:`Failure` naming the reason,
so the round records the update as rejected and it never reaches the sum. A site can still clip
to a smaller norm or lie within what the check allows; neither raises the sensitivity the noise
was calibrated to.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedloom.core.blocks import norm64
from fedloom.core.messages import ClientResult, ClientState
from fedloom.engine.delta import HeldModels
from fedloom.engine.tasks import Consume, Executor, Failure, Reply, Task, TrainTask, run_each

log = logging.getLogger("fedloom.server")

TOLERANCE = 1e-5
"""Relative slack on the bound: a site clips in float64 and sends float32."""


@dataclass
class ClipCheck:
    """``inner``, with training replies checked against the round's clip bound (the stage
    named ``stage``; ``initial`` when a task carries none); ``adaptive`` also checks the
    site's unclipped report. ``names`` turns a client index into a site's name for the log."""

    inner: Executor
    initial: float
    adaptive: bool = False
    stage: str = "dp"
    names: Sequence[str] = ()

    @property
    def states(self) -> dict[int, ClientState]:
        """The inner executor's kept client state (empty for a deployment: it is at the sites)."""
        states: dict[int, ClientState] = getattr(self.inner, "states")  # noqa: B009
        return states

    def held_models(self, clients: Sequence[int]) -> Mapping[int, tuple[int, bytes]] | None:
        """What the inner executor's sites say they hold from a delta broadcast, if it knows
        (:class:`fedloom.engine.delta.HeldModels`)."""
        inner = self.inner
        return inner.held_models(clients) if isinstance(inner, HeldModels) else None

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        replies = self.inner.run(tasks)
        return [self._checked(task, reply) for task, reply in zip(tasks, replies, strict=True)]

    def run_each(self, tasks: Sequence[Task], consume: Consume) -> None:
        """The inner executor's :func:`~fedloom.engine.tasks.run_each`, each reply checked as it
        passes, so a streaming executor stays streaming behind the check."""
        run_each(self.inner, tasks, lambda p, reply: consume(p, self._checked(tasks[p], reply)))

    def _checked(self, task: Task, reply: Reply) -> Reply:
        if not (isinstance(task, TrainTask) and isinstance(reply, ClientResult)):
            return reply
        reason = self.problem(task, reply)
        if reason is None:
            return reply
        who = self.names[task.client] if task.client < len(self.names) else task.client
        log.warning("round %d: site %s: %s", task.broadcast.round, who, reason)
        return Failure(reason)

    def problem(self, task: TrainTask, reply: ClientResult) -> str | None:
        """Why ``reply`` cannot have been clipped as ``task`` asked, or None."""
        bound = float(task.broadcast.stage_config.get(self.stage, {}).get("clip", self.initial))
        if reply.payload is not None:
            return "an encoded update cannot be checked against the clipping bound"
        norm = norm64(reply.update)  # in float64, a block at a time
        if not norm <= bound * (1 + TOLERANCE):
            return (
                f"the update's L2 norm {norm:.6g} exceeds the round's clipping bound {bound:.6g}:"
                " the site did not clip it, so it cannot enter a differentially private sum"
            )
        if not self.adaptive:
            return None
        report = reply.metrics.get(f"{self.stage}.unclipped")
        if report not in (-0.5, 0.5):
            return f"its {self.stage}.unclipped report is {report!r}, not -0.5 or 0.5"
        if report == -0.5 and norm < bound * (1 - TOLERANCE):
            return (
                f"it reports a clipped update, but the update's norm {norm:.6g} is inside the "
                f"bound {bound:.6g}"
            )
        return None
