"""What a noise stage tells the engine so that every round is accounted."""

from __future__ import annotations

from typing import Protocol

from fedloom.privacy.accounting import DpEvent
from fedloom.privacy.sampling import Sampling
from fedloom.stages import Stage


class NoiseStage(Stage, Protocol):
    """A stage whose ``traits.private`` is true: it states the cohort sampling its accounting
    assumes and describes one round as a ``dp_accounting`` event (for updates of ``dimension``
    coordinates, which some mechanisms' bounds depend on)."""

    @property
    def sampling(self) -> Sampling: ...

    def round_event(self, dimension: int | None = None) -> DpEvent: ...
