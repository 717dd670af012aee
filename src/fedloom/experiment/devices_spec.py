"""``[devices]``: heterogeneous devices on a virtual clock (see :mod:`fedloom.executors.devices`).

```toml
[devices]
speed = 1.0               # median compute speed relative to the reference device
speed_sigma = 0.8         # log-normal spread of speeds (0: every device alike)
downlink = 1e6            # median bytes per second; leave out for an instant network
uplink = 2.5e5
bandwidth_sigma = 0.5     # log-normal spread of both bandwidths
availability = 0.9        # chance a sampled device is reachable
dropout = 0.05            # chance it drops out mid-round
seconds_per_example = 0.001
# trace = "devices.csv"   # per-device profiles instead of the distributions above
deadline = 2.0            # simulated seconds; later clients are stragglers
keep = 40                 # over-selection: keep the first 40 to finish (run.cohort > keep)
partial_work = false      # stragglers send the steps that fit instead (use with fednova)
```
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from fedloom.algorithms import ClientProgram
from fedloom.data import ClientData
from fedloom.executors import SimulatedExecutor
from fedloom.executors.devices import DeviceExecutor, Fleet, LogNormal
from fedloom.experiment import checks
from fedloom.experiment.errors import ExperimentError, KeyPath


@dataclass(frozen=True)
class DevicesSpec:
    """Device profiles, from distributions or a trace file, and the round's deadline rules."""

    speed: float = 1.0
    speed_sigma: float = 0.0
    downlink: float | None = None
    uplink: float | None = None
    bandwidth_sigma: float = 0.0
    availability: float = 1.0
    dropout: float = 0.0
    seconds_per_example: float = 1e-3
    trace: str | None = None
    deadline: float | None = None
    keep: int | None = None
    partial_work: bool = False

    SECTION: ClassVar[KeyPath] = ("devices",)

    def __post_init__(self) -> None:
        at = self.SECTION
        checks.number((*at, "speed"), self.speed, low=0, low_open=True)
        for key in ("speed_sigma", "bandwidth_sigma"):
            checks.number((*at, key), getattr(self, key), low=0)
        for key in ("downlink", "uplink"):
            if getattr(self, key) is not None:
                checks.number((*at, key), getattr(self, key), low=0, low_open=True)
        for key in ("availability", "dropout"):
            checks.number((*at, key), getattr(self, key), low=0, high=1)
        checks.number((*at, "seconds_per_example"), self.seconds_per_example, low=0, low_open=True)
        if self.trace is not None:
            checks.text((*at, "trace"), self.trace)
        if self.deadline is not None:
            checks.number((*at, "deadline"), self.deadline, low=0, low_open=True)
        if self.keep is not None:
            checks.integer((*at, "keep"), self.keep, minimum=1)
        checks.flag((*at, "partial_work"), self.partial_work)
        if self.partial_work and self.deadline is None:
            raise ExperimentError(
                (*at, "partial_work"), "needs a deadline to fit the work into; set deadline"
            )

    def fleet(self, clients: int, *, seed: int) -> Fleet:
        """The devices of ``clients`` clients: the trace when given, else drawn with ``seed``."""
        if self.trace is not None:
            try:
                fleet = Fleet.from_csv(self.trace, seconds_per_example=self.seconds_per_example)
            except FileNotFoundError:
                raise ExperimentError(
                    (*self.SECTION, "trace"), f"no such file: {self.trace}"
                ) from None
            except ValueError as error:
                raise ExperimentError((*self.SECTION, "trace"), str(error)) from None
            missing = [c for c in range(clients) if c not in fleet.profiles]
            if missing:
                raise ExperimentError(
                    (*self.SECTION, "trace"),
                    f"has no profile for clients {missing[:10]} of the {clients} clients",
                )
            return fleet
        return Fleet.sample(
            clients,
            seed=seed,
            speed=LogNormal(self.speed, self.speed_sigma),
            downlink=_bandwidth(self.downlink, self.bandwidth_sigma),
            uplink=_bandwidth(self.uplink, self.bandwidth_sigma),
            availability=self.availability,
            dropout=self.dropout,
            seconds_per_example=self.seconds_per_example,
        )

    def executor(
        self,
        inner: SimulatedExecutor,
        program: ClientProgram,
        clients: Sequence[ClientData],
        *,
        seed: int,
    ) -> DeviceExecutor:
        """``inner`` behind these devices."""
        return DeviceExecutor(
            inner,
            self.fleet(len(clients), seed=seed),
            program=program,
            clients=clients,
            deadline=self.deadline,
            keep=self.keep,
            partial_work=self.partial_work,
            seed=seed,
        )

    def resolved(self, base_dir: Path | None) -> DevicesSpec:
        """This spec with a relative trace path made absolute against ``base_dir``."""
        if self.trace is None or base_dir is None or Path(self.trace).is_absolute():
            return self
        return replace(self, trace=str(base_dir / self.trace))


def _bandwidth(median: float | None, sigma: float) -> LogNormal | float:
    return math.inf if median is None else LogNormal(median, sigma)
